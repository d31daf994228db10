//! `/v1/messages`: create and cancel (`send` or `admin`), read and list
//! (any scope: a `send` token reads what it sent).

use super::*;
use crate::auth::{MessageReader, Sender};
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::UNIX_EPOCH;
use tocsin_protocol::{Topic, Urgency};
use tocsin_store_api::tocsin_audience::rules::{
    valid_message_tag, LocalDateTime, LocalSchedule, LocalTimeError, MAX_RATE_PER_MINUTE,
};
use tocsin_store_api::{MessageRules, MessageState, NewMessage, Target};
use utoipa::ToSchema;

/// A message to send, for `POST /v1/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageRequest {
    /// The payload: a string is sent as is, any other JSON value as its JSON
    /// text; absent or null sends a push without data.
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: Option<Value>,
    /// `{"all":true}`, `{"topic":"news"}`, `{"userIds":[…]}` or `{"subscriptionIds":[…]}`.
    #[schema(value_type = Object)]
    target: Value,
    /// `classic` (the default: the payload as `sw.js` reads it), `declarative`
    /// (the payload is a Declarative Web Push message, `{"web_push":8030,
    /// "notification":{"title","navigate",…},"app_badge"?,"mutable"?}`,
    /// sent to every subscription), or `auto` (that message to Apple's push
    /// service, the same notification as classic JSON to the others).
    #[serde(default)]
    format: Option<String>,
    /// Seconds the push service keeps it (default four weeks).
    #[serde(default)]
    ttl: Option<u32>,
    /// `very-low`, `low`, `normal` or `high`.
    #[serde(default)]
    urgency: Option<String>,
    /// RFC 8030 topic: a newer message with the same topic replaces an undelivered one.
    #[serde(default)]
    topic: Option<String>,
    /// When to send: RFC 3339 time, or milliseconds since the epoch; with
    /// `inLocalTime`, a local date and time without a zone
    /// (`2026-12-24T09:00:00`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    send_at: Option<Value>,
    /// `sendAt` is a wall-clock time: each subscriber gets the message then
    /// in their own `timeZone` (the app's `defaultTimeZone`, else UTC, for
    /// those without one).
    #[serde(default)]
    in_local_time: bool,
    /// With `inLocalTime`: zones where the time has passed get nothing
    /// (else they get it at once).
    #[serde(default)]
    skip_passed_zones: bool,
    /// Not held by the app's quiet hours (a login code, a security alert).
    #[serde(default)]
    ignore_quiet_hours: bool,
    /// `false`: not subject to the app's frequency caps, and not counted
    /// toward them.
    #[serde(default = "yes")]
    frequency_cap: bool,
    /// The message's tags (at most 10), which caps with a `tag` count.
    #[serde(default)]
    tags: Vec<String>,
    /// Deliveries a minute, spread evenly, over every node (0:
    /// unthrottled); the app's `ratePerMinute` when absent.
    #[serde(default)]
    rate_per_minute: Option<u32>,
    /// An A/B test's variants (2 to 8), each a payload as `payload` takes
    /// it, instead of `payload`; with `abTest`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    variants: Option<Vec<Value>>,
    /// The A/B test: `{"samplePercent": 20, "decideAfter": "1h", "metric":
    /// "clicked" | "shown", "ifNoWinner": "send-best" | "stop"}`. The
    /// variants go to an even split of the sample; after `decideAfter` the
    /// one with the best rate of the metric per delivered wins if Pearson's
    /// chi-squared gives p < 0.05, and goes to the rest of the audience.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    ab_test: Option<Value>,
}

fn yes() -> bool {
    true
}

/// The most tags a message may carry.
const MAX_MESSAGE_TAGS: usize = 10;

/// What a message asks of the delivery rules, checked; and when it is
/// first due (`sendAt`, or its first wave's instant for a local time).
async fn message_rules(
    st: &AppState,
    app: tocsin_store_api::AppId,
    req: &MessageRequest,
    now: i64,
) -> Result<(MessageRules, Option<i64>), ApiError> {
    let bad = |m: &str| ApiError::new(ErrorId::InvalidMessageRules, m.to_owned());
    if req.tags.len() > MAX_MESSAGE_TAGS || !req.tags.iter().all(|t| valid_message_tag(t)) {
        return Err(bad("tags: at most 10, each 1 to 64 characters of [a-z0-9_.:-]"));
    }
    if req.skip_passed_zones && !req.in_local_time {
        return Err(bad("skipPassedZones applies to a message with inLocalTime"));
    }
    if req.rate_per_minute.is_some_and(|r| r > MAX_RATE_PER_MINUTE) {
        return Err(bad("ratePerMinute: at most 1000000"));
    }
    let app_rules = st
        .store
        .app_rules(app)
        .await
        .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot read the app's rules", &e))?;
    let mut rules = MessageRules {
        ignore_quiet_hours: req.ignore_quiet_hours,
        frequency_cap: req.frequency_cap,
        tags: req.tags.clone(),
        rate_per_minute: req.rate_per_minute.unwrap_or(app_rules.rate_per_minute),
        ..MessageRules::default()
    };
    if !req.in_local_time {
        return Ok((rules, parse_send_at(&req.send_at, now)?));
    }
    let Some(Value::String(text)) = &req.send_at else {
        return Err(ApiError::new(
            ErrorId::InvalidSendAt,
            "inLocalTime needs sendAt as a local date and time without a zone, such as \"2026-12-24T09:00:00\"",
        ));
    };
    let local = LocalDateTime::parse(text).map_err(|e| ApiError::new(ErrorId::InvalidSendAt, e.to_string()))?;
    let plan =
        LocalSchedule::plan(&local, &app_rules.default_zone(), req.skip_passed_zones, now).map_err(|e| match e {
            LocalTimeError::Passed(_) => ApiError::new(ErrorId::SendAtPassed, e.to_string()),
            LocalTimeError::Invalid(_) => ApiError::new(ErrorId::InvalidSendAt, e.to_string()),
        })?;
    let first = plan.first_at().ok_or_else(|| ApiError::new(ErrorId::SendAtPassed, "no zone is left"))?;
    if first > now.saturating_add(MAX_SCHEDULE_AHEAD_MS) {
        return Err(ApiError::new(ErrorId::InvalidSendAt, "sendAt is more than a year (366 days) ahead"));
    }
    rules.local = Some(plan);
    Ok((rules, Some(first)))
}

pub(crate) fn parse_target(v: &Value) -> Result<Target, ApiError> {
    let bad = |m: &str| ApiError::new(ErrorId::InvalidTarget, m.to_owned());
    // An expression's own errors name their column (`invalid-segment`).
    match v.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) {
        Some((k, Value::String(text))) if k == "where" => return Ok(Target::Where(super::audience::condition(text)?)),
        Some((k, Value::String(name))) if k == "segment" => {
            return match tocsin_store_api::valid_segment_name(name) {
                true => Ok(Target::Segment(name.clone())),
                false => Err(bad("segment must be a segment's name: 1 to 64 of a-z, 0-9, _ and -")),
            };
        }
        _ => {}
    }
    let target: Target = serde_json::from_value(v.clone()).map_err(|_| {
        bad("target must be one of {\"all\":true}, {\"topic\":\"…\"}, {\"userIds\":[…]}, {\"subscriptionIds\":[…]}, \
             {\"segment\":\"…\"}, {\"where\":\"…\"}")
    })?;
    let nul = match &target {
        Target::Topic(t) => t.contains('\0'),
        Target::UserIds(ids) => ids.iter().any(|u| u.contains('\0')),
        _ => false,
    };
    if nul {
        // No stored topic or user id holds U+0000 (PostgreSQL cannot), and
        // a query naming one would fail at every attempt to start the message.
        return Err(bad("a topic or user id never contains U+0000"));
    }
    match &target {
        Target::Sample { .. } => return Err(bad("a sample is made by an A/B test (variants with abTest)")),
        Target::All(false) => return Err(bad("{\"all\":false} targets nobody")),
        Target::Topic(t) if t.is_empty() || t.len() > 64 => return Err(bad("topic must be 1 to 64 characters")),
        Target::UserIds(ids) if ids.is_empty() || ids.len() > 1000 => {
            return Err(bad("userIds must list 1 to 1000 user ids"))
        }
        Target::SubscriptionIds(ids) if ids.is_empty() || ids.len() > 1000 => {
            return Err(bad("subscriptionIds must list 1 to 1000 ids"))
        }
        _ => {}
    }
    Ok(target)
}

/// The furthest ahead a message may be scheduled: a year (366 days, so
/// that "this date next year" always fits).
pub(crate) const MAX_SCHEDULE_AHEAD_MS: i64 = 366 * tocsin_store_api::DAY_MS;

/// `sendAt`: an RFC 3339 time or milliseconds since the epoch, at most
/// [`MAX_SCHEDULE_AHEAD_MS`] after `now` (a time in the past sends now).
pub(crate) fn parse_send_at(v: &Option<Value>, now: i64) -> Result<Option<i64>, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorId::InvalidSendAt,
            "sendAt must be an RFC 3339 time or milliseconds since the epoch, at most a year (366 days) ahead",
        )
    };
    let at = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_i64().filter(|t| *t >= 0).ok_or_else(bad)?,
        Some(Value::String(s)) if s.len() <= 64 => {
            let t = humantime::parse_rfc3339_weak(s).map_err(|_| bad())?;
            i64::try_from(t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_millis()).map_err(|_| bad())?
        }
        Some(_) => return Err(bad()),
    };
    if at > now.saturating_add(MAX_SCHEDULE_AHEAD_MS) {
        return Err(bad());
    }
    Ok(Some(at))
}

/// Stores a message for a target; sends it now or at `sendAt`.
#[utoipa::path(post, path = "/v1/messages", security(("token" = ["send", "admin"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "a retried request with the same key creates one message")),
    request_body = MessageRequest,
    responses((status = 202, description = "{\"id\",\"state\"}"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn create_message(
    token: Sender,
    State(st): State<AppState>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    JsonBody(req): JsonBody<MessageRequest>,
) -> Result<Response, ApiError> {
    let target = parse_target(&req.target)?;
    // A segment is read again when the message is sent; one that does not
    // exist now is a mistake to say at once.
    if let Target::Segment(name) = &target {
        let found = st
            .store
            .segment(token.app.id, name)
            .await
            .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot read the segment", &e))?;
        if found.is_none() {
            return Err(ApiError::new(ErrorId::SegmentNotFound, format!("the app has no segment {name:?}")));
        }
    }
    if req.variants.is_some() && req.in_local_time {
        return Err(ApiError::new(ErrorId::InvalidAbTest, "an A/B test is not sent at a local time"));
    }
    let now = now_ms();
    let (rules, send_at) = message_rules(&st, token.app.id, &req, now).await?;
    let id = new_id()?;
    let format = payload::parse_format(req.format.as_deref())?;
    let (payloads, rules, send_at) = match (req.variants, req.ab_test) {
        (None, None) => {
            let event_token = st.event_tokens.token(&id);
            let stamp = payload::Stamp {
                id: id.clone(),
                event_token: event_token.clone(),
                app: token.app.payload_name().map(str::to_owned),
            };
            (payload::build(format, req.payload, &stamp, st.public_url.as_ref())?, rules, send_at)
        }
        (Some(variants), Some(settings)) => {
            if req.payload.is_some() {
                return Err(ApiError::new(ErrorId::InvalidAbTest, "variants replace payload: send one or the other"));
            }
            let app = token.app.payload_name();
            let new = super::ab::new_test(variants, settings, format, app, &st.event_tokens, st.public_url.as_ref())?;
            let stored = payload::Payloads {
                format,
                payload: Some(new.payloads.to_stored()),
                apple_payload: None,
                personal: false,
            };
            // A test's message is taken up by the engine at its sendAt:
            // now, unless it was given.
            (stored, MessageRules { ab: Some(new.test), ..rules }, Some(send_at.unwrap_or(now)))
        }
        _ => return Err(ApiError::new(ErrorId::InvalidAbTest, "variants and abTest go together")),
    };
    if let Some(u) = &req.urgency {
        u.parse::<Urgency>().map_err(|e| ApiError::new(ErrorId::InvalidUrgency, e.to_string()))?;
    }
    if let Some(t) = &req.topic {
        Topic::new(t).map_err(|e| ApiError::new(ErrorId::InvalidTopic, e.to_string()))?;
    }
    let new = NewMessage {
        payload: payloads.payload,
        format: payloads.format,
        apple_payload: payloads.apple_payload,
        personal: payloads.personal,
        ttl: req.ttl.unwrap_or(tocsin_protocol::Ttl::DEFAULT.0),
        urgency: req.urgency,
        topic: req.topic,
        send_at,
        rules,
        idempotency_key,
        ..NewMessage::new(id, token.app.id, target, now)
    };
    let (message, created) = st
        .store
        .insert_message(&new)
        .await
        .map_err(|e| ApiError::storage(ErrorId::UnableToStoreMessage, "the message could not be stored", &e))?;
    if created {
        tracing::info!(message = %message.id(), state = message.state.as_str(), "message stored");
        st.metrics.message_accepted(&token.app.metric_label);
        st.engine.wake();
    }
    let mut answer = json!({"id": message.id(), "state": message.state.as_str()});
    if let Some(warning) = throttle_warning(&st, &message).await? {
        answer["warnings"] = json!([warning]);
    }
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// For a throttled message: whether its audience (counted now) takes
/// longer to send at its rate than its TTL lets the push services keep it.
async fn throttle_warning(st: &AppState, m: &tocsin_store_api::Message) -> Result<Option<String>, ApiError> {
    let rate = m.accepted.rules.rate_per_minute;
    if rate == 0 {
        return Ok(None);
    }
    let audience = st
        .store
        .count_subscriptions(m.app_id(), &m.accepted.target)
        .await
        .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot count the audience", &e))?;
    let minutes = audience as f64 / f64::from(rate);
    let ttl_minutes = f64::from(m.accepted.ttl) / 60.0;
    Ok((minutes > ttl_minutes).then(|| {
        format!(
            "at {rate} a minute its {audience} subscriptions take {minutes:.0} minutes to send, longer than its TTL \
             of {ttl_minutes:.0}: those sent last may expire first (raise ratePerMinute or ttl)"
        )
    }))
}

/// One message with its counts, and its failures by reason.
#[utoipa::path(get, path = "/v1/messages/{id}", security(("token" = ["read", "send", "admin"])),
    params(("id" = String, Path, description = "the message's id")),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_message(
    token: MessageReader,
    State(st): State<AppState>,
    IdParam(id): IdParam,
) -> Result<Json<MessageView>, ApiError> {
    let storage =
        |e: tocsin_store_api::StoreError| ApiError::storage(ErrorId::StorageFailed, "cannot read the message", &e);
    let Some(m) = st.store.app_message(token.app.id, &id).await.map_err(storage)? else {
        return Err(ApiError::new(ErrorId::MessageNotFound, format!("no message {id}")));
    };
    let local = m.accepted.rules.local.clone().map(|l| (l, m.state));
    let mut view = view_of(&st, m).await.map_err(storage)?;
    if let Some((local, state)) = local {
        let progress = st.store.wave_progress(&id).await.map_err(storage)?;
        view.local_time = Some(super::views::LocalTimeView::of(&local, state, &progress, now_ms()));
    }
    view.failed_by_reason = Some(st.store.message_failures(&id).await.map_err(storage)?.into_iter().collect());
    view.failure_examples = Some(st.store.message_failure_examples(&id).await.map_err(storage)?.into_iter().collect());
    Ok(Json(view))
}

/// A message as the API shows it (an A/B test's with its parts).
async fn view_of(st: &AppState, m: tocsin_store_api::Message) -> Result<MessageView, tocsin_store_api::StoreError> {
    let test = match &m.accepted.rules.ab {
        Some(test) => Some(super::ab::view(st.store.as_ref(), &m, test).await?),
        None => None,
    };
    let mut view = MessageView::from(m);
    if let Some((test, counts, state)) = test {
        view.ab_test = Some(test);
        view.counts = counts.into();
        view.state = state;
    }
    Ok(view)
}

/// Cancels what is not sent yet (an A/B test: with its parts).
#[utoipa::path(delete, path = "/v1/messages/{id}", security(("token" = ["send", "admin"])),
    params(("id" = String, Path, description = "the message's id")),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel_message(
    token: Sender,
    State(st): State<AppState>,
    IdParam(id): IdParam,
) -> Result<Json<MessageView>, ApiError> {
    let storage =
        |e: tocsin_store_api::StoreError| ApiError::storage(ErrorId::StorageFailed, "cannot cancel the message", &e);
    let Some(m) = st.store.cancel_message(token.app.id, &id, now_ms()).await.map_err(storage)? else {
        return Err(ApiError::new(ErrorId::MessageNotFound, format!("no message {id}")));
    };
    let view = view_of(&st, m).await.map_err(storage)?;
    // An A/B test is done when its parts are.
    if view.state == MessageState::Done.as_str() {
        return Err(ApiError::new(ErrorId::MessageAlreadyDone, "the message was already sent"));
    }
    Ok(Json(view))
}

/// Messages, newest first.
#[utoipa::path(get, path = "/v1/messages", security(("token" = ["read", "send", "admin"])),
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "{\"items\":[MessageView],\"nextCursor\"}")))]
pub(crate) async fn list_messages(
    token: MessageReader,
    State(st): State<AppState>,
    Q(q): Q<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let n = limit(&q)?;
    let items = st
        .store
        .list_messages(token.app.id, q.cursor.as_deref(), n)
        .await
        .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot list messages", &e))?;
    let next = (items.len() as i64 == n).then(|| items.last().map(|m| m.id().to_owned())).flatten();
    let mut views = Vec::with_capacity(items.len());
    for m in items {
        let view = view_of(&st, m)
            .await
            .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot read an A/B test's parts", &e))?;
        views.push(view);
    }
    let items = views;
    Ok(Json(json!({"items": items, "nextCursor": next})))
}

impl ApiBody for MessageRequest {
    const INVALID: ErrorId = ErrorId::InvalidMessage;
}

/// `POST /v1/messages/preview`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviewRequest {
    /// The payload, as `POST /v1/messages` takes it.
    #[schema(value_type = Object)]
    payload: Value,
    /// `classic` (the default), `declarative` or `auto`.
    #[serde(default)]
    format: Option<String>,
    /// The subscriber to render it for (its language and tags); none: a
    /// subscriber with neither.
    #[serde(default)]
    subscription_id: Option<i64>,
}

impl ApiBody for PreviewRequest {
    const INVALID: ErrorId = ErrorId::InvalidMessage;
}

/// What one subscriber would get of a message, rendered as the engine
/// renders it (text by language, templates over its tags), without
/// storing or sending anything: for the dashboard's preview.
#[utoipa::path(post, path = "/v1/messages/preview", security(("token" = ["read", "send", "admin"])), request_body = PreviewRequest,
    responses((status = 200, description = "{\"payload\",\"applePayload\",\"bytes\"}"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn preview_message(
    token: crate::auth::MessageReader,
    State(st): State<AppState>,
    JsonBody(req): JsonBody<PreviewRequest>,
) -> Result<Json<Value>, ApiError> {
    let format = payload::parse_format(req.format.as_deref())?;
    let sub = match req.subscription_id {
        None => None,
        Some(id) => Some(
            st.store
                .app_subscription(token.app.id, id)
                .await
                .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot read the subscription", &e))?
                .ok_or_else(|| ApiError::new(ErrorId::SubscriptionNotFound, format!("no subscription {id}")))?,
        ),
    };
    let subscriber =
        sub.as_ref().map_or(tocsin_store_api::tocsin_audience::expr::Subscriber::NOBODY, |s| s.as_subscriber());
    let out = payload::preview(format, req.payload, &subscriber, st.public_url.as_ref())?;
    let shown = |p: &Option<Vec<u8>>| {
        p.as_deref().map(|b| {
            serde_json::from_slice::<Value>(b)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
        })
    };
    Ok(Json(json!({
        "payload": shown(&out.payload),
        "applePayload": shown(&out.apple_payload),
        "bytes": out.payload.as_ref().map_or(0, Vec::len),
    })))
}
