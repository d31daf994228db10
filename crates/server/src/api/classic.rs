//! The classic contract (`/api/…`), which browsers call: the VAPID key,
//! subscribing and unsubscribing, test notifications, events, and
//! `POST /api/push` (a `send` token).

use super::*;
use crate::app::InApp;
use crate::auth::Sender;
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::limits::PublicLimit;
use crate::AppState;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tocsin_ops::subscriptions::{subscribe, Subscribe, SubscribeError, SubscribingApp};
use tocsin_protocol::{b64, Subscription};
use tocsin_store_api::{Message, MessageFormat, MessageState, NewMessage, Target};

/// The app's current VAPID public key (`/apps/{app}/api/vapid-public-key`
/// for another app than `default`).
#[utoipa::path(get, path = "/api/vapid-public-key", responses((status = 200, body = PublicKeyBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn vapid_public_key(InApp(app): InApp) -> Json<PublicKeyBody> {
    Json(PublicKeyBody { public_key: app.public_key.clone() })
}

/// Stores a browser's subscription (upsert by endpoint).
#[utoipa::path(post, path = "/api/subscription",
    request_body(content = Value, description = "PushSubscription.toJSON(), optionally with userId and topics"),
    responses((status = 200, body = SuccessBody), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(crate) async fn post_subscription(
    _limit: PublicLimit,
    InApp(app): InApp,
    State(st): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let bytes = body(raw)?;
    let map = json_object(&bytes)?;
    let user_id = user_id_field(&map)?;
    let topics = topics_field(&map)?;
    let tags = tags_field(&map)?;
    if tags.is_some() && !app.client_tags {
        return Err(ApiError::new(
            ErrorId::ClientTagsDisabled,
            "this app takes tags only from its backend (PATCH /v1/subscriptions/{id}/tags)",
        ));
    }
    let (language, time_zone) = (language_field(&map)?, time_zone_field(&map)?);
    let old_endpoint = match map.get("oldEndpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            url::Url::parse(s)
                .map_err(|_| ApiError::new(ErrorId::InvalidOldEndpoint, "oldEndpoint is not a URL"))?
                .to_string(),
        )
        .filter(|e| e.len() <= MAX_ENDPOINT_LEN)
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(ErrorId::InvalidOldEndpoint, format!("oldEndpoint is longer than {MAX_ENDPOINT_LEN} bytes"))
        })?,
        Some(_) => return Err(ApiError::new(ErrorId::InvalidOldEndpoint, "oldEndpoint must be a string")),
    };
    // The old subscription's auth secret: the proof that it is the caller's.
    let old_auth =
        map.get("oldKeys").and_then(|k| k.get("auth")).and_then(Value::as_str).and_then(|a| b64::decode(a).ok());
    if let Some(id) = &user_id {
        app.user_ids.check(id, map.get("userSignature"))?;
    }
    let named_key = match map.get("applicationServerKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(ApiError::new(ErrorId::UnknownVapidKey, "applicationServerKey must be a string")),
    };
    let subscription = Subscription::from_value(Value::Object(map))
        .map_err(|e| ApiError::new(ErrorId::of_protocol(e.id()), e.to_string()))?;
    check_endpoint_len(subscription.endpoint().as_str())?;
    st.policy
        .check(subscription.endpoint())
        .await
        .map_err(|reason| ApiError::new(ErrorId::EndpointNotAllowed, reason))?;
    let to = SubscribingApp { id: app.id, key_id: app.key_id, public_key: &app.public_key };
    let req = Subscribe {
        subscription,
        user_id,
        topics,
        named_key,
        replaces: old_endpoint.map(|e| (e, old_auth)),
        tags,
        language,
        time_zone,
    };
    subscribe(st.store.as_ref(), to, req, now_ms()).await.map_err(|e| match e {
        SubscribeError::UnknownKey => ApiError::new(ErrorId::UnknownVapidKey, e.to_string()),
        SubscribeError::OldNotProven => ApiError::new(ErrorId::OldSubscriptionNotProven, e.to_string()),
        SubscribeError::InOtherApp(m) => ApiError::new(ErrorId::EndpointInOtherApp, m),
        SubscribeError::NotProven => ApiError::new(ErrorId::SubscriptionNotProven, e.to_string()),
        SubscribeError::TooManyTags => ApiError::new(ErrorId::InvalidTags, e.to_string()),
        SubscribeError::Store(e) => {
            ApiError::storage(ErrorId::UnableToSaveSubscription, "Subscription received but failed to save it", &e)
        }
    })?;
    st.metrics.subscription_saved(&app.metric_label);
    Ok(success())
}

/// Removes a subscription; the auth secret proves the caller holds it.
#[utoipa::path(delete, path = "/api/subscription",
    request_body(content = Value, description = "{\"endpoint\":…,\"keys\":{\"auth\":…}}"),
    responses((status = 200, body = SuccessBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_subscription(
    _limit: PublicLimit,
    InApp(app): InApp,
    State(st): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let map = json_object(&body(raw)?)?;
    let (endpoint, auth) = endpoint_and_auth(&map)?;
    let deleted =
        st.store.delete_subscription_by_endpoint(app.id, &endpoint, &auth, now_ms()).await.map_err(|e| {
            ApiError::storage(ErrorId::UnableToDeleteSubscription, "failed to delete the subscription", &e)
        })?;
    if deleted {
        Ok(success())
    } else {
        Err(ApiError::new(ErrorId::SubscriptionNotFound, "no subscription with this endpoint and auth secret"))
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
    /// `classic` (the default), `declarative` or `auto`, as in `POST /v1/messages`.
    #[serde(default)]
    format: Option<String>,
}

/// Sends the body, as the payload, to every subscription.
#[utoipa::path(post, path = "/api/push", security(("token" = ["send", "admin"])),
    params(("wait" = Option<bool>, Query, description = "answer when sending has finished, with the counts; \
        past --wait-timeout, 202 with the counts so far"),
        ("format" = Option<String>, Query, description = "classic (default: the body is the payload as sw.js reads it), \
        declarative (the body is a Declarative Web Push message) or auto (declarative to Apple, classic to the rest)")),
    request_body(content = String, description = "the payload: any JSON or text"),
    responses((status = 200, body = SuccessBody), (status = 202, body = SuccessBody, description = "?wait=true past its deadline"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(crate) async fn push_all(
    token: Sender,
    State(st): State<AppState>,
    Q(q): Q<WaitQuery>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(raw)?;
    let app = token.app;
    let id = new_id()?;
    let token = st.event_tokens.token(&id);
    let payloads = match payload::parse_format(q.format.as_deref())? {
        format @ MessageFormat::Classic => {
            let payload = (!bytes.is_empty()).then(|| with_message_id(bytes.to_vec(), &id, &token, app.payload_name()));
            if let Some(p) = &payload {
                check_payload(p)?;
            }
            payload::Payloads { format, payload, apple_payload: None, personal: false }
        }
        format => {
            let message: Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(ErrorId::DeclarativeInvalidField, format!("a declarative message is JSON: {e}"))
            })?;
            let stamp = payload::Stamp {
                id: id.clone(),
                event_token: token.clone(),
                app: app.payload_name().map(str::to_owned),
            };
            payload::build(format, Some(message), &stamp, st.public_url.as_ref())?
        }
    };
    let new = NewMessage {
        payload: payloads.payload,
        format: payloads.format,
        apple_payload: payloads.apple_payload,
        personal: payloads.personal,
        ..NewMessage::new(id, app.id, Target::All(true), now_ms())
    };
    let (message, _) = st.store.insert_message(&new).await.map_err(|e| {
        ApiError::storage(ErrorId::UnableToSendMessages, "Failed to send the push message: it could not be stored", &e)
    })?;
    tracing::info!(message = %message.id(), state = message.state.as_str(), "message stored");
    st.metrics.message_accepted(&app.metric_label);
    st.engine.wake();
    if matches!(q.wait.as_deref(), Some("true" | "1" | "")) {
        let (m, finished) = wait_for(&st, &message).await?;
        let status = if finished { StatusCode::OK } else { StatusCode::ACCEPTED };
        let body = json!({"data": {"success": true, "messageId": m.id(), "counts": CountsView::from(m.counts)}});
        return Ok((status, Json(body)).into_response());
    }
    Ok(Json(json!({"data": {"success": true, "messageId": message.id()}})).into_response())
}

/// Waits until the message is done or cancelled (`true`), or the wait
/// deadline passes (`false`, with the message as it is then).
pub(crate) async fn wait_for(st: &AppState, message: &Message) -> Result<(Message, bool), ApiError> {
    let deadline = tokio::time::Instant::now() + st.wait_timeout;
    loop {
        match st.store.app_message(message.app_id(), message.id()).await {
            Ok(Some(m)) if matches!(m.state, MessageState::Done | MessageState::Cancelled) => return Ok((m, true)),
            Ok(Some(m)) if tokio::time::Instant::now() >= deadline => return Ok((m, false)),
            Ok(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => {
                return Err(ApiError::storage(ErrorId::UnableToSendMessages, "Failed to send the push message", &e));
            }
        }
    }
}

/// Sends a test notification to the caller's own subscription (the auth
/// secret proves it is theirs): the demo page's button.
#[utoipa::path(post, path = "/api/subscription/test",
    request_body(content = Value, description = "{\"endpoint\":…,\"keys\":{\"auth\":…}}"),
    responses((status = 202, description = "{\"id\",\"state\"}"), (status = 404, body = ErrorBody)))]
pub(crate) async fn test_notification(
    _limit: PublicLimit,
    InApp(app): InApp,
    State(st): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let map = json_object(&body(raw)?)?;
    let (endpoint, auth) = endpoint_and_auth(&map)?;
    let storage = |e: tocsin_store_api::StoreError| {
        ApiError::storage(ErrorId::UnableToSendMessages, "the test could not be stored", &e)
    };
    let sub = st.store.subscription_by_endpoint(app.id, &endpoint).await.map_err(storage)?;
    let Some(sub) = sub.filter(|s| s.subscription.auth().matches_base64(&auth)) else {
        return Err(ApiError::new(ErrorId::SubscriptionNotFound, "no subscription with this endpoint and auth secret"));
    };
    st.limits
        .tests
        .take(&endpoint)
        .map_err(|wait| crate::limits::rate_limited(wait, "one test notification per subscription per minute"))?;
    let id = new_id()?;
    let mut payload = json!({"title": "Test notification", "body": "Sent by Tocsin to this browser.", "url": "/", "messageId": id,
            "eventToken": st.event_tokens.token(&id)});
    if !app.is_default() {
        payload["app"] = Value::from(app.name.as_str());
    }
    let new = NewMessage {
        payload: Some(payload.to_string().into_bytes()),
        ttl: 3600,
        urgency: Some("high".into()),
        ..NewMessage::new(id, app.id, Target::SubscriptionIds(vec![sub.id]), now_ms())
    };
    let (message, _) = st.store.insert_message(&new).await.map_err(storage)?;
    tracing::info!(message = %message.id(), state = message.state.as_str(), "message stored");
    st.engine.wake();
    Ok((StatusCode::ACCEPTED, Json(json!({"id": message.id(), "state": message.state.as_str()}))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventBody {
    #[serde(rename = "type")]
    kind: tocsin_store_api::Interaction,
    #[serde(rename = "messageId")]
    message_id: String,
    /// The token the message's payload carried.
    #[serde(rename = "eventToken", default)]
    event_token: Option<String>,
    /// For `clicked`: the action clicked (absent: the notification itself).
    #[serde(default)]
    action: Option<String>,
    /// The reporting worker's subscription, with `keys.auth` as proof
    /// (read by `endpoint_and_auth`): the event then counts once for that
    /// delivery (without it, once per client address).
    #[serde(default)]
    endpoint: Option<String>,
    /// `{"auth": …}` of that subscription.
    #[serde(default, rename = "keys")]
    _keys: Option<Value>,
}

/// The service worker reports a notification `shown` or `clicked`.
#[utoipa::path(post, path = "/api/events",
    request_body(content = Value, description = "{\"type\":\"shown\"|\"clicked\",\"messageId\":…,\"eventToken\":…,\"action\"?:…}: the messageId and eventToken the payload carried; for a click, the action clicked (1 to 64 characters)"),
    responses((status = 202, body = SuccessBody), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn post_event(
    PublicLimit(client): PublicLimit,
    InApp(app): InApp,
    State(st): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(raw)?;
    let map = json_object(&bytes)?;
    let ev: EventBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::new(ErrorId::InvalidEvent, e.to_string()))?;
    if ev.action.as_deref().is_some_and(|a| a.is_empty() || a.len() > 64) {
        return Err(ApiError::new(ErrorId::InvalidEvent, "action must be 1 to 64 characters"));
    }
    if !st.event_tokens.check(&ev.message_id, ev.event_token.as_deref()) {
        return Err(ApiError::new(
            ErrorId::InvalidEventToken,
            "eventToken must be the one the message's payload carried",
        ));
    }
    // Whose delivery it is: a proven subscription, else the address.
    let recipient = match &ev.endpoint {
        None => format!("a:{}", crate::limits::key(client)),
        Some(_) => {
            let (endpoint, auth) = endpoint_and_auth(&map)?;
            let sub = st
                .store
                .subscription_by_endpoint(app.id, &endpoint)
                .await
                .map_err(|e| ApiError::storage(ErrorId::UnableToSaveEvent, "the event could not be saved", &e))?
                .filter(|s| s.subscription.auth().matches_base64(&auth))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorId::SubscriptionNotProven,
                        "endpoint and keys.auth must be a stored subscription of this app",
                    )
                })?;
            format!("s:{}", sub.id)
        }
    };
    let found = st
        .store
        .record_interaction(app.id, &ev.message_id, &recipient, ev.kind, ev.action.as_deref(), now_ms())
        .await
        .map_err(|e| ApiError::storage(ErrorId::UnableToSaveEvent, "the event could not be saved", &e))?;
    if !found {
        return Err(ApiError::new(ErrorId::MessageNotFound, format!("no message {}", ev.message_id)));
    }
    Ok((StatusCode::ACCEPTED, success()).into_response())
}
