//! The routes and their handlers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tocsin_protocol::{b64, ContentEncoding, Subscription, Topic, Urgency};
use tocsin_store::{Counts, Message, MessageState, NewMessage, NewSubscription, StoredSubscription, Target};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::{OpenApi, ToSchema};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, ServerConfig};

/// The OpenAPI description, generated from the annotations below.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tocsin", description = "Self-hosted Web Push server: the classic /api contract and the versioned /v1 API."),
    paths(
        vapid_public_key, post_subscription, delete_subscription, push_all, test_notification, post_event,
        create_message, get_message, cancel_message, list_messages,
        list_subscriptions, get_subscription, remove_subscription, stats,
        healthz, readyz, metrics
    ),
    components(schemas(ErrorBody, SuccessBody, PublicKeyBody, MessageRequest, MessageView, CountsView, SubscriptionView)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Builds the router with its layers.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    let mut app = Router::new()
        .route("/api/vapid-public-key", get(vapid_public_key))
        .route("/api/subscription", post(post_subscription).delete(delete_subscription))
        .route("/api/push", post(push_all))
        .route("/api/subscription/test", post(test_notification))
        .route("/api/events", post(post_event))
        .route("/v1/messages", post(create_message).get(list_messages))
        .route("/v1/messages/{id}", get(get_message).delete(cancel_message))
        .route("/v1/subscriptions", get(list_subscriptions))
        .route("/v1/subscriptions/{id}", get(get_subscription).delete(remove_subscription))
        .route("/v1/stats", get(stats))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(crate::web::routes())
        .fallback(|| async { ApiError::not_found("not-found", "no such route") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", format!("{method} is not allowed here"))
        })
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(state);
    if !config.cors_origins.is_empty() {
        let origin = if config.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(config.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([axum::http::header::CONTENT_TYPE, axum::http::header::AUTHORIZATION]),
        );
    }
    app.layer(tower_http::trace::TraceLayer::new_for_http())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Reads the body, turning an over-limit body into a 400 in the API's shape.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::bad_request("body-too-large", "request body is larger than the server accepts")
        } else {
            ApiError::bad_request("invalid-body", e.body_text())
        }
    })
}

fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("invalid-json", "body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request("invalid-json", format!("body is not valid JSON: {e}"))),
    }
}

/// `{"data":{"success":true}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessBody {
    /// Always `{"success":true}`, plus `messageId` and `counts` for `/api/push`.
    data: Value,
}

fn success() -> Json<Value> {
    Json(json!({"data": {"success": true}}))
}

/// `{"publicKey":"…"}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyBody {
    /// The VAPID public key, base64url: the browser's `applicationServerKey`.
    public_key: String,
}

/// The server's VAPID public key.
#[utoipa::path(get, path = "/api/vapid-public-key", responses((status = 200, body = PublicKeyBody)))]
async fn vapid_public_key(State(st): State<AppState>) -> Json<PublicKeyBody> {
    Json(PublicKeyBody { public_key: st.vapid_public_key.clone() })
}

const MAX_TOPICS: usize = 100;

fn user_id_field(map: &serde_json::Map<String, Value>) -> Result<Option<String>, ApiError> {
    match map.get("userId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        _ => Err(ApiError::bad_request("invalid-user-id", "userId must be a string of 1 to 256 characters")),
    }
}

fn topics_field(map: &serde_json::Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid-topics",
            format!(
                "topics must be an array of at most {MAX_TOPICS} names of 1 to 64 letters, digits, '.', '_' or '-'"
            ),
        )
    };
    match map.get("topics") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.len() <= MAX_TOPICS => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(s) = item else { return Err(bad()) };
                let ok = !s.is_empty()
                    && s.len() <= 64
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                if !ok {
                    return Err(bad());
                }
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
            Ok(Some(out))
        }
        _ => Err(bad()),
    }
}

/// Stores a browser's subscription (upsert by endpoint).
#[utoipa::path(post, path = "/api/subscription",
    request_body(content = Value, description = "PushSubscription.toJSON(), optionally with userId and topics"),
    responses((status = 200, body = SuccessBody), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn post_subscription(
    State(st): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let bytes = body(raw)?;
    let map = json_object(&bytes)?;
    let mut user_id = user_id_field(&map)?;
    let mut topics = topics_field(&map)?;
    let old_endpoint = match map.get("oldEndpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            url::Url::parse(s)
                .map_err(|_| ApiError::bad_request("invalid-old-endpoint", "oldEndpoint is not a URL"))?
                .to_string(),
        ),
        Some(_) => return Err(ApiError::bad_request("invalid-old-endpoint", "oldEndpoint must be a string")),
    };
    let subscription =
        Subscription::from_value(Value::Object(map)).map_err(|e| ApiError::bad_request(e.id(), e.to_string()))?;
    st.policy
        .check(subscription.endpoint())
        .await
        .map_err(|reason| ApiError::bad_request("endpoint-not-allowed", reason))?;
    let save_failed = |e: tocsin_store::StoreError| {
        ApiError::storage("unable-to-save-subscription", "Subscription received but failed to save it", &e)
    };
    // pushsubscriptionchange: the new subscription replaces the old one and
    // inherits its user and topics.
    let replaced = match &old_endpoint {
        Some(old) if old != subscription.endpoint().as_str() => {
            st.store.subscription_by_endpoint(old).await.map_err(save_failed)?
        }
        _ => None,
    };
    if let Some(old) = &replaced {
        user_id = user_id.or_else(|| old.user_id.clone());
        topics = topics.or_else(|| Some(old.topics.clone()));
    }
    let new = NewSubscription { subscription, user_id, topics, vapid_key_id: st.vapid_key_id };
    st.store.upsert_subscription(&new, now_ms()).await.map_err(save_failed)?;
    if let Some(old) = replaced {
        st.store.delete_subscription(old.id).await.map_err(save_failed)?;
    }
    st.metrics.subscriptions_saved.inc();
    Ok(success())
}

/// Removes a subscription; the auth secret proves the caller holds it.
#[utoipa::path(delete, path = "/api/subscription",
    request_body(content = Value, description = "{\"endpoint\":…,\"keys\":{\"auth\":…}}"),
    responses((status = 200, body = SuccessBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_subscription(
    State(st): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let map = json_object(&body(raw)?)?;
    let (endpoint, auth) = endpoint_and_auth(&map)?;
    let deleted = st
        .store
        .delete_subscription_by_endpoint(&endpoint, &auth)
        .await
        .map_err(|e| ApiError::storage("unable-to-delete-subscription", "failed to delete the subscription", &e))?;
    if deleted {
        Ok(success())
    } else {
        Err(ApiError::not_found("subscription-not-found", "no subscription with this endpoint and auth secret"))
    }
}

fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no-randomness", "cannot make an id"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A JSON-object payload gets the message's id as `messageId` (unless it has
/// one), so that the service worker can report `shown` and `clicked`.
fn with_message_id(payload: Vec<u8>, id: &str) -> Vec<u8> {
    match serde_json::from_slice::<Value>(&payload) {
        Ok(Value::Object(map)) if !map.contains_key("messageId") => {
            // Prepend the field to the sender's own bytes: key order and
            // formatting stay as they were.
            let text = String::from_utf8_lossy(&payload);
            let Some(rest) = text.trim_start().strip_prefix('{') else { return payload };
            let sep = if map.is_empty() { "" } else { "," };
            format!("{{\"messageId\":\"{id}\"{sep}{rest}").into_bytes()
        }
        _ => payload,
    }
}

fn check_payload(payload: &[u8]) -> Result<(), ApiError> {
    let max = ContentEncoding::Aes128Gcm.max_plaintext();
    if payload.len() > max {
        return Err(ApiError::bad_request(
            "payload-too-large",
            format!("payload is {} bytes; at most {max} fit one push message", payload.len()),
        ));
    }
    Ok(())
}

/// `Query` whose rejection is an [`ApiError`] (axum's own is plain text).
struct Q<T>(T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))
    }
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
}

/// Sends the body, as the payload, to every subscription.
#[utoipa::path(post, path = "/api/push", security(("admin" = [])),
    params(("wait" = Option<bool>, Query, description = "answer when sending has finished, with the counts")),
    request_body(content = String, description = "the payload: any JSON or text"),
    responses((status = 200, body = SuccessBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
async fn push_all(
    _admin: Admin,
    State(st): State<AppState>,
    Q(q): Q<WaitQuery>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let bytes = body(raw)?;
    let id = new_id()?;
    let payload = (!bytes.is_empty()).then(|| with_message_id(bytes.to_vec(), &id));
    if let Some(p) = &payload {
        check_payload(p)?;
    }
    let new = NewMessage {
        id,
        payload,
        target: Target::All(true),
        ttl: tocsin_protocol::Ttl::DEFAULT.0,
        urgency: None,
        topic: None,
        send_at: None,
        idempotency_key: None,
        created_at: now_ms(),
    };
    let (message, _) = st.store.insert_message(&new).await.map_err(|e| {
        ApiError::storage("unable-to-send-messages", "Failed to send the push message: it could not be stored", &e)
    })?;
    tracing::info!(message = %message.id, state = message.state.as_str(), "message stored");
    st.metrics.messages_accepted.inc();
    st.engine.wake();
    if matches!(q.wait.as_deref(), Some("true" | "1" | "")) {
        let done = wait_for(&st, &message.id).await?;
        return Ok(Json(
            json!({"data": {"success": true, "messageId": done.id, "counts": CountsView::from(done.counts)}}),
        ));
    }
    Ok(Json(json!({"data": {"success": true, "messageId": message.id}})))
}

async fn wait_for(st: &AppState, id: &str) -> Result<Message, ApiError> {
    loop {
        match st.store.message(id).await {
            Ok(Some(m)) if matches!(m.state, MessageState::Done | MessageState::Cancelled) => return Ok(m),
            Ok(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => {
                return Err(ApiError::storage("unable-to-send-messages", "Failed to send the push message", &e));
            }
        }
    }
}

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
    /// Seconds the push service keeps it (default four weeks).
    #[serde(default)]
    ttl: Option<u32>,
    /// `very-low`, `low`, `normal` or `high`.
    #[serde(default)]
    urgency: Option<String>,
    /// RFC 8030 topic: a newer message with the same topic replaces an undelivered one.
    #[serde(default)]
    topic: Option<String>,
    /// When to send: RFC 3339 time, or milliseconds since the epoch.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    send_at: Option<Value>,
}

fn parse_target(v: &Value) -> Result<Target, ApiError> {
    let bad = |m: &str| ApiError::bad_request("invalid-target", m.to_owned());
    let target: Target = serde_json::from_value(v.clone()).map_err(|_| {
        bad("target must be one of {\"all\":true}, {\"topic\":\"…\"}, {\"userIds\":[…]}, {\"subscriptionIds\":[…]}")
    })?;
    match &target {
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

fn parse_send_at(v: &Option<Value>) -> Result<Option<i64>, ApiError> {
    let bad =
        || ApiError::bad_request("invalid-send-at", "sendAt must be an RFC 3339 time or milliseconds since the epoch");
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().filter(|t| *t >= 0).map(Some).ok_or_else(bad),
        Some(Value::String(s)) => {
            let t = humantime::parse_rfc3339_weak(s).map_err(|_| bad())?;
            Ok(Some(t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_millis() as i64))
        }
        Some(_) => Err(bad()),
    }
}

/// A message's counters.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountsView {
    targeted: i64,
    delivered: i64,
    failed: i64,
    gone: i64,
    expired: i64,
    pending_retry: i64,
    shown: i64,
    clicked: i64,
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
        }
    }
}

/// A message as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    id: String,
    /// `scheduled`, `queued`, `sending`, `done` or `cancelled`.
    state: String,
    created_at: String,
    send_at: Option<String>,
    counts: CountsView,
    /// Failures by reason (`payload-too-large`, `vapid-key-mismatch`,
    /// `retries-exhausted-http-503`, `ttl-expired`, …); in `GET /v1/messages/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_by_reason: Option<std::collections::BTreeMap<String, i64>>,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            id: m.id,
            state: m.state.as_str().to_owned(),
            created_at: rfc3339(m.created_at),
            send_at: m.send_at.map(rfc3339),
            counts: m.counts.into(),
            failed_by_reason: None,
        }
    }
}

fn endpoint_and_auth(map: &serde_json::Map<String, Value>) -> Result<(String, String), ApiError> {
    let endpoint = match map.get("endpoint") {
        Some(Value::String(s)) if !s.is_empty() => url::Url::parse(s)
            .map_err(|_| ApiError::bad_request("invalid-endpoint", "endpoint is not a URL"))?
            .to_string(),
        _ => return Err(ApiError::bad_request("no-endpoint", "Subscription must have an endpoint")),
    };
    let auth = map
        .get("keys")
        .and_then(|k| k.get("auth"))
        .and_then(Value::as_str)
        .and_then(|a| b64::decode(a).ok())
        .filter(|a| a.len() == 16)
        .ok_or_else(|| {
            ApiError::bad_request("invalid-auth", "keys.auth must be the subscription's 16-byte auth secret")
        })?;
    Ok((endpoint, b64::encode(auth)))
}

/// Sends a test notification to the caller's own subscription (the auth
/// secret proves it is theirs): the demo page's button.
#[utoipa::path(post, path = "/api/subscription/test",
    request_body(content = Value, description = "{\"endpoint\":…,\"keys\":{\"auth\":…}}"),
    responses((status = 202, description = "{\"id\",\"state\"}"), (status = 404, body = ErrorBody)))]
async fn test_notification(
    State(st): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let map = json_object(&body(raw)?)?;
    let (endpoint, auth) = endpoint_and_auth(&map)?;
    let storage =
        |e: tocsin_store::StoreError| ApiError::storage("unable-to-send-messages", "the test could not be stored", &e);
    let sub = st.store.subscription_by_endpoint(&endpoint).await.map_err(storage)?;
    let Some(sub) = sub.filter(|s| b64::encode(s.subscription.auth().as_bytes()) == auth) else {
        return Err(ApiError::not_found(
            "subscription-not-found",
            "no subscription with this endpoint and auth secret",
        ));
    };
    let id = new_id()?;
    let payload =
        json!({"title": "Test notification", "body": "Sent by Tocsin to this browser.", "url": "/", "messageId": id});
    let new = NewMessage {
        id,
        payload: Some(payload.to_string().into_bytes()),
        target: Target::SubscriptionIds(vec![sub.id]),
        ttl: 3600,
        urgency: Some("high".into()),
        topic: None,
        send_at: None,
        idempotency_key: None,
        created_at: now_ms(),
    };
    let (message, _) = st.store.insert_message(&new).await.map_err(storage)?;
    tracing::info!(message = %message.id, state = message.state.as_str(), "message stored");
    st.engine.wake();
    Ok((StatusCode::ACCEPTED, Json(json!({"id": message.id, "state": message.state.as_str()}))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    #[serde(rename = "type")]
    kind: tocsin_store::Event,
    #[serde(rename = "messageId")]
    message_id: String,
}

/// The service worker reports a notification `shown` or `clicked`.
#[utoipa::path(post, path = "/api/events",
    request_body(content = Value, description = "{\"type\":\"shown\"|\"clicked\",\"messageId\":…}"),
    responses((status = 202, body = SuccessBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn post_event(State(st): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let bytes = body(raw)?;
    json_object(&bytes)?;
    let ev: EventBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("invalid-event", e.to_string()))?;
    let found = st
        .store
        .add_event(&ev.message_id, ev.kind)
        .await
        .map_err(|e| ApiError::storage("unable-to-save-event", "the event could not be saved", &e))?;
    if !found {
        return Err(ApiError::not_found("message-not-found", format!("no message {}", ev.message_id)));
    }
    Ok((StatusCode::ACCEPTED, success()).into_response())
}

/// Stores a message for a target; sends it now or at `sendAt`.
#[utoipa::path(post, path = "/v1/messages", security(("admin" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "a retried request with the same key creates one message")),
    request_body = MessageRequest,
    responses((status = 202, description = "{\"id\",\"state\"}"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_message(
    _admin: Admin,
    State(st): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(raw)?;
    json_object(&bytes)?;
    let req: MessageRequest =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("invalid-message", e.to_string()))?;
    let target = parse_target(&req.target)?;
    let id = new_id()?;
    let payload = match req.payload {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.into_bytes()),
        Some(v) => Some(with_message_id(v.to_string().into_bytes(), &id)),
    };
    if let Some(p) = &payload {
        check_payload(p)?;
    }
    if let Some(u) = &req.urgency {
        u.parse::<Urgency>().map_err(|e| ApiError::bad_request("invalid-urgency", e.to_string()))?;
    }
    if let Some(t) = &req.topic {
        Topic::new(t).map_err(|e| ApiError::bad_request("invalid-topic", e.to_string()))?;
    }
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid-idempotency-key",
                        "Idempotency-Key must be 1 to 255 visible characters",
                    )
                })?
                .to_owned(),
        ),
    };
    let new = NewMessage {
        id,
        payload,
        target,
        ttl: req.ttl.unwrap_or(tocsin_protocol::Ttl::DEFAULT.0),
        urgency: req.urgency,
        topic: req.topic,
        send_at: parse_send_at(&req.send_at)?,
        idempotency_key,
        created_at: now_ms(),
    };
    let (message, created) = st
        .store
        .insert_message(&new)
        .await
        .map_err(|e| ApiError::storage("unable-to-store-message", "the message could not be stored", &e))?;
    if created {
        tracing::info!(message = %message.id, state = message.state.as_str(), "message stored");
        st.metrics.messages_accepted.inc();
        st.engine.wake();
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"id": message.id, "state": message.state.as_str()}))).into_response())
}

/// One message with its counts, and its failures by reason.
#[utoipa::path(get, path = "/v1/messages/{id}", security(("admin" = [])),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody)))]
async fn get_message(
    _admin: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let storage =
        |e: tocsin_store::StoreError| ApiError::storage("database-unavailable", "cannot read the message", &e);
    let Some(m) = st.store.message(&id).await.map_err(storage)? else {
        return Err(ApiError::not_found("message-not-found", format!("no message {id}")));
    };
    let mut view = MessageView::from(m);
    view.failed_by_reason = Some(st.store.message_failures(&id).await.map_err(storage)?.into_iter().collect());
    Ok(Json(view))
}

/// Cancels what is not sent yet.
#[utoipa::path(delete, path = "/v1/messages/{id}", security(("admin" = [])),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_message(
    _admin: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    match st.store.cancel_message(&id, now_ms()).await {
        Ok(Some(m)) if m.state == MessageState::Done => {
            Err(ApiError::new(StatusCode::CONFLICT, "message-already-done", "the message was already sent"))
        }
        Ok(Some(m)) => Ok(Json(m.into())),
        Ok(None) => Err(ApiError::not_found("message-not-found", format!("no message {id}"))),
        Err(e) => Err(ApiError::storage("database-unavailable", "cannot cancel the message", &e)),
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default, rename = "userId")]
    user_id: Option<String>,
}

fn limit(q: &PageQuery) -> Result<i64, ApiError> {
    match q.limit {
        None => Ok(100),
        Some(l) if (1..=1000).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::bad_request("invalid-limit", "limit must be between 1 and 1000")),
    }
}

/// Messages, newest first.
#[utoipa::path(get, path = "/v1/messages", security(("admin" = [])),
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "{\"items\":[MessageView],\"nextCursor\"}")))]
async fn list_messages(_admin: Admin, State(st): State<AppState>, Q(q): Q<PageQuery>) -> Result<Json<Value>, ApiError> {
    let n = limit(&q)?;
    let items = st
        .store
        .list_messages(q.cursor.as_deref(), n)
        .await
        .map_err(|e| ApiError::storage("database-unavailable", "cannot list messages", &e))?;
    let next = (items.len() as i64 == n).then(|| items.last().map(|m| m.id.clone())).flatten();
    let items: Vec<MessageView> = items.into_iter().map(Into::into).collect();
    Ok(Json(json!({"items": items, "nextCursor": next})))
}

/// A subscription as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    id: i64,
    endpoint: String,
    user_id: Option<String>,
    topics: Vec<String>,
    created_at: String,
    updated_at: String,
    expiration_time: Option<u64>,
    /// The VAPID public key the browser subscribed with.
    vapid_key_id: i64,
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
        }
    }
}

/// Subscriptions by id, with cursor paging; filter by `topic` or `userId`.
#[utoipa::path(get, path = "/v1/subscriptions", security(("admin" = [])),
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query), ("topic" = Option<String>, Query),
        ("userId" = Option<String>, Query)),
    responses((status = 200, description = "{\"items\":[SubscriptionView],\"nextCursor\"}"), (status = 400, body = ErrorBody)))]
async fn list_subscriptions(
    _admin: Admin,
    State(st): State<AppState>,
    Q(q): Q<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let n = limit(&q)?;
    let after = match &q.cursor {
        None => 0,
        Some(c) => {
            c.parse::<i64>().map_err(|_| ApiError::bad_request("invalid-cursor", "cursor is not one this API gave"))?
        }
    };
    let target = match (&q.topic, &q.user_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("invalid-filter", "filter by topic or by userId, not both"));
        }
        (Some(t), None) => Target::Topic(t.clone()),
        (None, Some(u)) => Target::UserIds(vec![u.clone()]),
        (None, None) => Target::All(true),
    };
    let items = st
        .store
        .page_subscriptions(&target, after, None, n)
        .await
        .map_err(|e| ApiError::storage("database-unavailable", "cannot list subscriptions", &e))?;
    let next = (items.len() as i64 == n).then(|| items.last().map(|s| s.id.to_string())).flatten();
    let items: Vec<SubscriptionView> = items.into_iter().map(Into::into).collect();
    Ok(Json(json!({"items": items, "nextCursor": next})))
}

fn sub_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("subscription-not-found", format!("no subscription {id}")))
}

/// One subscription.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", security(("admin" = [])),
    responses((status = 200, body = SubscriptionView), (status = 404, body = ErrorBody)))]
async fn get_subscription(
    _admin: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    match st.store.subscription(sub_id(&id)?).await {
        Ok(Some(s)) => Ok(Json(s.into())),
        Ok(None) => Err(ApiError::not_found("subscription-not-found", format!("no subscription {id}"))),
        Err(e) => Err(ApiError::storage("database-unavailable", "cannot read the subscription", &e)),
    }
}

/// Deletes one subscription.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", security(("admin" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_subscription(
    _admin: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match st.store.delete_subscription(sub_id(&id)?).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found("subscription-not-found", format!("no subscription {id}"))),
        Err(e) => Err(ApiError::storage("database-unavailable", "cannot delete the subscription", &e)),
    }
}

/// Totals.
#[utoipa::path(get, path = "/v1/stats", security(("admin" = [])), responses((status = 200, description = "totals")))]
async fn stats(_admin: Admin, State(st): State<AppState>) -> Result<Json<tocsin_store::Stats>, ApiError> {
    st.store.stats().await.map(Json).map_err(|e| ApiError::storage("database-unavailable", "cannot read stats", &e))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503, body = ErrorBody)))]
async fn readyz(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    st.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database-unavailable", "the database does not answer")
    })?;
    Ok(Json(json!({"status": "ok"})))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain")))]
async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let stats =
        st.store.stats().await.map_err(|e| ApiError::storage("database-unavailable", "cannot read stats", &e))?;
    let text = st.metrics.render(&stats);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response())
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_goes_in_front_of_json_objects_only() {
        assert_eq!(with_message_id(br#"{"b":1,"a":2}"#.to_vec(), "m1"), br#"{"messageId":"m1","b":1,"a":2}"#.to_vec());
        assert_eq!(with_message_id(b" {}".to_vec(), "m1"), br#"{"messageId":"m1"}"#.to_vec());
        assert_eq!(with_message_id(br#"{"messageId":"x"}"#.to_vec(), "m1"), br#"{"messageId":"x"}"#.to_vec());
        assert_eq!(with_message_id(b"plain text".to_vec(), "m1"), b"plain text".to_vec());
        assert_eq!(with_message_id(b"[1]".to_vec(), "m1"), b"[1]".to_vec());
    }
}
