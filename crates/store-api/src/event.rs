//! What happened, as the outbox keeps it: one [`Event`] per kind, each with
//! its payload type. This is the one definition of an event's `data` (what
//! webhooks and the event stream carry): a store writes
//! [`NewEvent::new`]`(app, event)`, which serializes it here. The one event
//! a database writes itself, `subscription.created` (a trigger on the
//! subscriptions table, so that the subscribe path pays no extra round
//! trip), is proven to write [`SubscriptionCreated`] by the SQL store's tests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AppId, EventType, Target};
use tocsin_audience::Tags;

/// `message.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageCreated {
    /// The message's id.
    pub message_id: String,
    /// `queued` or `scheduled`.
    pub state: String,
    /// `classic`, `declarative` or `auto`.
    pub format: String,
    /// Who it goes to, as `POST /v1/messages` took it.
    pub target: Target,
    /// When it is to be sent (RFC 3339), or null for at once.
    pub send_at: Option<String>,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
}

/// `message.done`: the final counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageDone {
    /// The message's id.
    pub message_id: String,
    /// What became of its deliveries.
    pub counts: DoneCounts,
}

/// The counts a `message.done` event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoneCounts {
    /// Subscriptions it was for.
    pub targeted: i64,
    /// Accepted by their push services.
    pub delivered: i64,
    /// Failed for good.
    pub failed: i64,
    /// Answered 404/410: the subscription was removed.
    pub gone: i64,
    /// Expired before it was sent.
    pub expired: i64,
    /// Shown, as service workers reported.
    pub shown: i64,
    /// Clicked, as service workers reported.
    pub clicked: i64,
    /// Dropped for a frequency cap.
    #[serde(default)]
    pub capped: i64,
    /// Held by quiet hours (0: a message is done only when none is held).
    #[serde(default)]
    pub held: i64,
}

impl From<crate::Counts> for DoneCounts {
    fn from(c: crate::Counts) -> Self {
        Self {
            targeted: c.targeted,
            delivered: c.delivered,
            failed: c.failed,
            gone: c.gone,
            expired: c.expired,
            shown: c.shown,
            clicked: c.clicked,
            capped: c.capped,
            held: c.held,
        }
    }
}

/// `message.cancelled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageCancelled {
    /// The message's id.
    pub message_id: String,
    /// When (RFC 3339).
    pub cancelled_at: String,
}

/// `subscription.created` (written by the database's trigger; see the
/// module's documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionCreated {
    /// The subscription's id.
    pub subscription_id: i64,
    /// Its push endpoint.
    pub endpoint: String,
    /// Its user, if it has one.
    pub user_id: Option<String>,
    /// Its topics.
    pub topics: Vec<String>,
    /// Its tags (`null` for none; absent from events older than tags).
    #[serde(default)]
    pub tags: Option<Tags>,
    /// Its browser's language.
    #[serde(default)]
    pub language: Option<String>,
    /// Its browser's time zone.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// `subscription.updated`: a browser's new subscription replaced its old
/// one (`oldSubscriptionId`, `oldEndpoint`), or its tags, language or time
/// zone changed. Carries its attributes as they are now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionUpdated {
    /// The (new) subscription's id.
    pub subscription_id: i64,
    /// Its endpoint.
    pub endpoint: Option<String>,
    /// The id of the one it replaced (gone now), when it replaced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_subscription_id: Option<i64>,
    /// The old endpoint, when it replaced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_endpoint: Option<String>,
    /// Its tags.
    #[serde(default)]
    pub tags: Tags,
    /// Its browser's language.
    #[serde(default)]
    pub language: Option<String>,
    /// Its browser's time zone.
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl SubscriptionUpdated {
    /// The event of a subscription whose attributes changed.
    pub fn attributes_of(s: &crate::StoredSubscription) -> Self {
        Self {
            subscription_id: s.id,
            endpoint: Some(s.subscription.endpoint().as_str().to_owned()),
            old_subscription_id: None,
            old_endpoint: None,
            tags: s.tags.clone(),
            language: s.language.clone(),
            time_zone: s.time_zone.clone(),
        }
    }
}

/// One item of `subscription.removed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionRemoved {
    /// The subscription's id.
    pub subscription_id: i64,
    /// Its push endpoint.
    pub endpoint: String,
    /// Why: `gone`, `expired`, `unsubscribed`, `deleted`, `key-retired`…
    pub reason: String,
}

/// One item of `delivery.failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryFailed {
    /// The message's id.
    pub message_id: String,
    /// The subscription's id.
    pub subscription_id: i64,
    /// Its push endpoint.
    pub endpoint: String,
    /// Why, as a failure reason (`http-400`, `payload-too-large`…).
    pub reason: String,
    /// The push service's status, if it answered.
    pub status: Option<u16>,
}

/// One item of `notification.shown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationShown {
    /// The message's id.
    pub message_id: String,
}

/// One item of `notification.clicked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationClicked {
    /// The message's id.
    pub message_id: String,
    /// The notification's action that was clicked, or null for its body.
    pub action: Option<String>,
}

/// `webhook.test`, sent to one webhook by `POST /v1/webhooks/{id}/test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookTested {
    /// The webhook's id.
    pub webhook_id: String,
    /// What it is.
    pub message: String,
}

/// Every event the outbox keeps, with its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message was created.
    MessageCreated(MessageCreated),
    /// A message is done.
    MessageDone(MessageDone),
    /// A message was cancelled.
    MessageCancelled(MessageCancelled),
    /// A subscription was stored (new).
    SubscriptionCreated(SubscriptionCreated),
    /// A subscription was replaced by its browser's new one.
    SubscriptionUpdated(SubscriptionUpdated),
    /// A subscription was removed.
    SubscriptionRemoved(SubscriptionRemoved),
    /// A delivery failed for good.
    DeliveryFailed(DeliveryFailed),
    /// A notification was shown.
    NotificationShown(NotificationShown),
    /// A notification was clicked.
    NotificationClicked(NotificationClicked),
    /// A webhook's test.
    WebhookTest(WebhookTested),
}

impl Event {
    /// Its type.
    pub fn kind(&self) -> EventType {
        match self {
            Self::MessageCreated(_) => EventType::MessageCreated,
            Self::MessageDone(_) => EventType::MessageDone,
            Self::MessageCancelled(_) => EventType::MessageCancelled,
            Self::SubscriptionCreated(_) => EventType::SubscriptionCreated,
            Self::SubscriptionUpdated(_) => EventType::SubscriptionUpdated,
            Self::SubscriptionRemoved(_) => EventType::SubscriptionRemoved,
            Self::DeliveryFailed(_) => EventType::DeliveryFailed,
            Self::NotificationShown(_) => EventType::NotificationShown,
            Self::NotificationClicked(_) => EventType::NotificationClicked,
            Self::WebhookTest(_) => EventType::WebhookTest,
        }
    }

    /// Its `data`: the one place an event is serialized.
    pub fn data(&self) -> Value {
        let value = match self {
            Self::MessageCreated(e) => serde_json::to_value(e),
            Self::MessageDone(e) => serde_json::to_value(e),
            Self::MessageCancelled(e) => serde_json::to_value(e),
            Self::SubscriptionCreated(e) => serde_json::to_value(e),
            Self::SubscriptionUpdated(e) => serde_json::to_value(e),
            Self::SubscriptionRemoved(e) => serde_json::to_value(e),
            Self::DeliveryFailed(e) => serde_json::to_value(e),
            Self::NotificationShown(e) => serde_json::to_value(e),
            Self::NotificationClicked(e) => serde_json::to_value(e),
            Self::WebhookTest(e) => serde_json::to_value(e),
        };
        // Plain structs of strings and numbers always serialize.
        value.unwrap_or(Value::Null)
    }

    /// Reads an event of type `kind` back from its `data`; `None` when the
    /// data is not that type's payload.
    pub fn parse(kind: EventType, data: &Value) -> Option<Self> {
        fn from<T: serde::de::DeserializeOwned>(data: &Value) -> Option<T> {
            T::deserialize(data).ok()
        }
        Some(match kind {
            EventType::MessageCreated => Self::MessageCreated(from(data)?),
            EventType::MessageDone => Self::MessageDone(from(data)?),
            EventType::MessageCancelled => Self::MessageCancelled(from(data)?),
            EventType::SubscriptionCreated => Self::SubscriptionCreated(from(data)?),
            EventType::SubscriptionUpdated => Self::SubscriptionUpdated(from(data)?),
            EventType::SubscriptionRemoved => Self::SubscriptionRemoved(from(data)?),
            EventType::DeliveryFailed => Self::DeliveryFailed(from(data)?),
            EventType::NotificationShown => Self::NotificationShown(from(data)?),
            EventType::NotificationClicked => Self::NotificationClicked(from(data)?),
            EventType::WebhookTest => Self::WebhookTest(from(data)?),
        })
    }
}

/// An event to write, inside the transaction of what caused it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The app it happened in.
    pub app: AppId,
    /// What happened.
    pub kind: EventType,
    /// About what (one item of `data.items` for a batched type).
    pub data: Value,
}

impl NewEvent {
    /// `event` in `app`, serialized.
    pub fn new(app: AppId, event: Event) -> Self {
        Self { app, kind: event.kind(), data: event.data() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_the_documented_json_and_reads_back() {
        let clicked = Event::NotificationClicked(NotificationClicked { message_id: "m1".into(), action: None });
        assert_eq!(clicked.data(), serde_json::json!({"messageId": "m1", "action": null}));
        let failed = Event::DeliveryFailed(DeliveryFailed {
            message_id: "m1".into(),
            subscription_id: 7,
            endpoint: "https://push.example.net/x".into(),
            reason: "http-400".into(),
            status: Some(400),
        });
        assert_eq!(
            failed.data(),
            serde_json::json!({"messageId": "m1", "subscriptionId": 7, "endpoint": "https://push.example.net/x",
                "reason": "http-400", "status": 400})
        );
        for e in [clicked, failed] {
            assert_eq!(Event::parse(e.kind(), &e.data()), Some(e));
        }
        assert_eq!(Event::parse(EventType::MessageDone, &serde_json::json!({"messageId": "m1"})), None);
    }
}
