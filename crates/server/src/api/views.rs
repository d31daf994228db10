//! What the API answers with: the JSON views of messages, counts and
//! subscriptions, and the classic contract's `{"data":…}` bodies.

use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};
use tocsin_store_api::{Counts, Message, StoredSubscription};
use utoipa::ToSchema;

/// `{"data":{"success":true}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessBody {
    /// Always `{"success":true}`, plus `messageId` and `counts` for `/api/push`.
    pub(crate) data: Value,
}

pub(crate) fn success() -> Json<Value> {
    Json(json!({"data": {"success": true}}))
}

/// `{"publicKey":"…"}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyBody {
    /// The VAPID public key, base64url: the browser's `applicationServerKey`.
    pub(crate) public_key: String,
}

/// A message's counters.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountsView {
    pub(crate) targeted: i64,
    pub(crate) delivered: i64,
    pub(crate) failed: i64,
    pub(crate) gone: i64,
    pub(crate) expired: i64,
    pub(crate) pending_retry: i64,
    pub(crate) shown: i64,
    pub(crate) clicked: i64,
    /// Held by the app's quiet hours, to go when they end in the
    /// subscriber's zone.
    pub(crate) held: i64,
    /// Dropped for the app's frequency caps.
    pub(crate) capped: i64,
}

impl From<Counts> for CountsView {
    fn from(c: Counts) -> Self {
        Self {
            targeted: c.targeted,
            delivered: c.delivered,
            failed: c.failed,
            gone: c.gone,
            expired: c.expired,
            pending_retry: c.pending_retry,
            shown: c.shown,
            clicked: c.clicked,
            held: c.held,
            capped: c.capped,
        }
    }
}

/// A message as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub(crate) id: String,
    /// `scheduled`, `queued`, `sending`, `done` or `cancelled`.
    pub(crate) state: String,
    /// `classic`, `declarative` or `auto`: what its payload is.
    pub(crate) format: &'static str,
    pub(crate) created_at: String,
    pub(crate) send_at: Option<String>,
    /// Who it goes to, as it was accepted (`{"all":true}`, `{"segment":"…"}`,
    /// `{"where":"…"}` with the expression as it prints, …).
    #[schema(value_type = Object)]
    pub(crate) target: Value,
    pub(crate) counts: CountsView,
    /// Failures by reason (`payload-too-large`, `vapid-key-mismatch`,
    /// `retries-exhausted-http-503`, `ttl-expired`, …); in `GET /v1/messages/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failed_by_reason: Option<std::collections::BTreeMap<String, i64>>,
    /// One example of each reason's failures: which subscription, at which
    /// push service, and what happened; in `GET /v1/messages/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failure_examples: Option<std::collections::BTreeMap<String, String>>,
    /// For a message at a local time: the time, and its progress by zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) local_time: Option<LocalTimeView>,
    /// Not held by quiet hours.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) ignore_quiet_hours: bool,
    /// Subject to the app's frequency caps (false: bypasses them).
    pub(crate) frequency_cap: bool,
    /// Its tags, which caps with a `tag` count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    /// Deliveries a minute over every node (absent: unthrottled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate_per_minute: Option<u32>,
    /// For an A/B test: its variants' funnels, the p-value, the winner and
    /// why (its `counts` are its parts' summed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ab_test: Option<super::ab::AbTestView>,
    /// For a part of an A/B test: which test, which variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ab_part_of: Option<super::ab::AbPartOfView>,
}

/// A message at a local time: when, and how far each wave of zones is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalTimeView {
    /// The local time each subscriber gets it at (`2026-12-24T09:00:00`).
    pub(crate) send_at: String,
    /// Whether zones where it had passed at creation were skipped.
    pub(crate) skip_passed_zones: bool,
    /// When the next wave not yet begun goes (RFC 3339); none when every
    /// wave has begun.
    pub(crate) next_zone_at: Option<String>,
    /// Waves not yet sent.
    pub(crate) pending_zones: usize,
    /// Waves sent.
    pub(crate) sent_zones: usize,
    /// Each wave: the zones that reach the time at one instant.
    pub(crate) zones: Vec<WaveView>,
}

/// One wave of a message at a local time.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveView {
    /// When (RFC 3339).
    pub(crate) at: String,
    /// `pending`, `sending`, `sent`, `skipped` (it had passed at creation,
    /// with `skipPassedZones`) or `empty` (none of the audience is in it).
    pub(crate) state: &'static str,
    /// The zones (IANA names).
    pub(crate) zones: Vec<String>,
    /// Whether subscriptions without a zone are in it (the app's default zone's wave).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) without_zone: bool,
    /// Delivered by its shards so far (retries aside).
    pub(crate) delivered: i64,
}

impl LocalTimeView {
    /// The plan of a message, with its waves' progress if it has started.
    pub(crate) fn of(
        local: &tocsin_store_api::tocsin_audience::rules::LocalSchedule,
        state: tocsin_store_api::MessageState,
        progress: &[tocsin_store_api::WaveProgress],
        now: i64,
    ) -> Self {
        use tocsin_store_api::MessageState as S;
        let zones: Vec<WaveView> = local
            .waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let p = progress.iter().find(|p| p.wave == i as i64);
                let state = match (w.skipped, state, p) {
                    (true, ..) => "skipped",
                    (_, S::Cancelled, _) if w.at > now => "skipped",
                    (_, S::Scheduled | S::Queued, _) => "pending",
                    (_, _, Some(p)) if p.done == p.shards => "sent",
                    (_, _, Some(_)) if w.at > now => "pending",
                    (_, _, Some(_)) => "sending",
                    // Started without shards for it: none of the audience is in it.
                    (_, _, None) => "empty",
                };
                WaveView {
                    at: rfc3339(w.at),
                    state,
                    zones: w.filter.zones.clone(),
                    without_zone: w.filter.unset,
                    delivered: p.map_or(0, |p| p.delivered),
                }
            })
            .collect();
        let next = local.waves.iter().zip(&zones).filter(|(_, v)| v.state == "pending").map(|(w, _)| w.at).min();
        Self {
            send_at: local.local.clone(),
            skip_passed_zones: local.skip_passed_zones,
            next_zone_at: next.map(rfc3339),
            pending_zones: zones.iter().filter(|z| z.state == "pending").count(),
            sent_zones: zones.iter().filter(|z| z.state == "sent").count(),
            zones,
        }
    }
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            id: m.accepted.id,
            state: m.state.as_str().to_owned(),
            format: m.accepted.format.as_str(),
            created_at: rfc3339(m.accepted.created_at),
            send_at: m.accepted.send_at.map(rfc3339),
            target: serde_json::to_value(&m.accepted.target).unwrap_or(Value::Null),
            counts: m.counts.into(),
            failed_by_reason: None,
            failure_examples: None,
            local_time: None,
            ignore_quiet_hours: m.accepted.rules.ignore_quiet_hours,
            frequency_cap: m.accepted.rules.frequency_cap,
            tags: m.accepted.rules.tags,
            rate_per_minute: Some(m.accepted.rules.rate_per_minute).filter(|r| *r > 0),
            ab_test: None,
            ab_part_of: m.accepted.rules.ab_part.as_ref().map(Into::into),
        }
    }
}

/// A subscription as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub(crate) id: i64,
    pub(crate) endpoint: String,
    pub(crate) user_id: Option<String>,
    pub(crate) topics: Vec<String>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) expiration_time: Option<u64>,
    /// The VAPID public key the browser subscribed with.
    pub(crate) vapid_key_id: i64,
    /// Whose push service the endpoint is: `fcm`, `mozilla`, `apple`, `wns` or `other`.
    pub(crate) push_service: &'static str,
    /// The site's attributes of it: keys to strings, numbers or booleans.
    #[schema(value_type = Object)]
    pub(crate) tags: Value,
    /// Its browser's language (BCP 47), as last reported.
    pub(crate) language: Option<String>,
    /// Its browser's IANA time zone, as last reported.
    pub(crate) time_zone: Option<String>,
    /// When its browser last posted it (RFC 3339).
    pub(crate) last_seen_at: String,
}

impl From<StoredSubscription> for SubscriptionView {
    fn from(s: StoredSubscription) -> Self {
        Self {
            id: s.id,
            endpoint: s.subscription.endpoint().to_string(),
            user_id: s.user_id,
            topics: s.topics,
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
            expiration_time: s.subscription.expiration_time(),
            vapid_key_id: s.vapid_key_id,
            push_service: tocsin_store_api::push_service_of(s.subscription.endpoint()),
            tags: s.tags.to_json(),
            language: s.language,
            time_zone: s.time_zone,
            last_seen_at: rfc3339(s.last_seen_at),
        }
    }
}

/// A stored time as RFC 3339. Never panics: a value outside 1970 to 9999
/// (which the API no longer accepts, but an older release may have stored)
/// is shown as the nearest end of that range.
pub(crate) fn rfc3339(ms: i64) -> String {
    let ms = ms.clamp(0, tocsin_protocol::subscription::MAX_EXPIRATION_MS as i64);
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
