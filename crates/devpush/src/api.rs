//! The HTTP routes: the push endpoint (RFC 8030) and the control API.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tocsin_protocol::b64;
use tocsin_protocol::ece::{AesGcmParams, ReceiverKeys, MAX_BODY};
use tocsin_protocol::request::{Topic, Urgency};
use tocsin_protocol::vapid;

use crate::state::{now_ms, FaultSpec, Gate, RecordedMessage, State, Sub};
use crate::DropConnection;

type St = AxState<Arc<State>>;

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(index_or_websocket))
        .route("/uas", get(crate::ws::list_uas))
        .route("/uas/{uaid}/disconnect", post(crate::ws::disconnect))
        .route("/healthz", get(|| async { "ok" }))
        .route("/subscriptions", post(mint))
        .route("/subscriptions/batch", post(mint_batch))
        .route("/subscriptions/{id}", get(show_sub).delete(delete_sub))
        .route("/subscriptions/{id}/expire", post(expire_sub))
        .route("/subscriptions/{id}/faults", post(add_faults).delete(clear_faults))
        .route("/messages", get(list_messages).delete(clear_messages))
        .route("/received", get(received))
        .route("/push/{id}", post(push))
        .fallback(|| async { error(StatusCode::NOT_FOUND, 102, "no such route") })
        .with_state(state)
}

/// An error, answered in autopush's JSON shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    errno: u16,
    message: String,
}

fn error(status: StatusCode, errno: u16, message: &str) -> ApiError {
    ApiError { status, errno, message: message.to_owned() }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.status.as_u16(),
            "errno": self.errno,
            "error": self.status.canonical_reason().unwrap_or(""),
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

/// `GET /`: the WebSocket when asked for one (`ws.rs`), else the route index.
async fn index_or_websocket(
    st: St,
    ws: Result<axum::extract::WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match ws {
        Ok(ws) => crate::ws::upgrade(st.0.clone(), ws),
        Err(e) => {
            tracing::debug!(error = %e, "GET / without a WebSocket upgrade");
            index(st).await.into_response()
        }
    }
}

async fn index(AxState(st): St) -> Json<Value> {
    Json(json!({
        "service": "tocsin dev push-service",
        "baseUrl": st.base_url,
        "routes": {
            "POST /subscriptions": "mint a subscription; body {\"applicationServerKey\"?: base64url}; answers a PushSubscription JSON",
            "POST /subscriptions/batch": "{\"count\": N, \"applicationServerKey\"?}: answers an array of PushSubscription JSON",
            "GET /subscriptions/{id}": "state, attempts and received count",
            "DELETE /subscriptions/{id}": "forget it: pushes then get 404",
            "POST /subscriptions/{id}/expire": "pushes then get 410",
            "POST /subscriptions/{id}/faults": "queue faults: {status, retryAfter, delayMs, drop, times} or an array of them",
            "GET /messages?subscription={id}": "messages received, decrypted",
            "GET /received": "{\"total\", \"counts\": {subscription id: messages received}}",
            "DELETE /messages": "forget all messages",
            "POST /push/{id}": "the RFC 8030 push endpoint",
            "GET / (WebSocket)": "Mozilla's push protocol for Firefox (dom.push.serverURL = ws://HOST:PORT/)",
            "GET /uas": "browsers connected over the WebSocket",
            "POST /uas/{uaid}/disconnect": "{\"holdMs\"?: n}: close its connection and refuse it for holdMs",
        }
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MintRequest {
    #[serde(default)]
    application_server_key: Option<String>,
    #[serde(default)]
    count: Option<usize>,
}

fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, 100, &format!("invalid JSON body: {e}")))
}

fn mint_one(st: &State, app_server_key: Option<Vec<u8>>) -> Result<Value, ApiError> {
    let keys =
        ReceiverKeys::generate().map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, 999, "key generation failed"))?;
    let id = st.new_id();
    let sub = json!({
        "endpoint": format!("{}/push/{id}", st.base_url),
        "expirationTime": null,
        "keys": {
            "p256dh": b64::encode(keys.public_key().as_bytes()),
            "auth": b64::encode(keys.auth().as_bytes()),
        }
    });
    st.lock().subs.insert(
        id,
        Sub {
            keys: Some(Arc::new(keys)),
            channel: None,
            app_server_key,
            expired: false,
            attempts: 0,
            attempt_times: Vec::new(),
            received: 0,
            faults: VecDeque::new(),
        },
    );
    Ok(sub)
}

fn app_server_key(req: &MintRequest) -> Result<Option<Vec<u8>>, ApiError> {
    match &req.application_server_key {
        None => Ok(None),
        Some(k) => match b64::decode(k) {
            Ok(bytes) if bytes.len() == 65 && bytes[0] == 4 => Ok(Some(bytes)),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                100,
                "applicationServerKey must be a 65-byte uncompressed P-256 key, base64url",
            )),
        },
    }
}

async fn mint(AxState(st): St, body: Bytes) -> Result<Response, ApiError> {
    let req: MintRequest = parse_body(&body)?;
    let sub = mint_one(&st, app_server_key(&req)?)?;
    Ok((StatusCode::CREATED, Json(sub)).into_response())
}

async fn mint_batch(AxState(st): St, body: Bytes) -> Result<Response, ApiError> {
    let req: MintRequest = parse_body(&body)?;
    let count = req.count.unwrap_or(1);
    if count == 0 || count > 100_000 {
        return Err(error(StatusCode::BAD_REQUEST, 100, "count must be between 1 and 100000"));
    }
    let key = app_server_key(&req)?;
    let subs = (0..count).map(|_| mint_one(&st, key.clone())).collect::<Result<Vec<_>, _>>()?;
    Ok((StatusCode::CREATED, Json(subs)).into_response())
}

async fn show_sub(AxState(st): St, Path(id): Path<String>) -> Response {
    let inner = st.lock();
    let Some(sub) = inner.subs.get(&id) else {
        return error(StatusCode::NOT_FOUND, 102, "no such subscription").into_response();
    };
    Json(json!({
        "id": id,
        "endpoint": format!("{}/push/{id}", st.base_url),
        "expired": sub.expired,
        "attempts": sub.attempts,
        "attemptTimes": sub.attempt_times,
        "received": sub.received,
        "pendingFaults": sub.faults,
        "applicationServerKey": sub.app_server_key.as_ref().map(b64::encode),
    }))
    .into_response()
}

async fn delete_sub(AxState(st): St, Path(id): Path<String>) -> Response {
    match st.lock().subs.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, 102, "no such subscription").into_response(),
    }
}

async fn expire_sub(AxState(st): St, Path(id): Path<String>) -> Response {
    match st.lock().subs.get_mut(&id) {
        Some(sub) => {
            sub.expired = true;
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, 102, "no such subscription").into_response(),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Faults {
    One(FaultSpec),
    Many(Vec<FaultSpec>),
}

async fn add_faults(AxState(st): St, Path(id): Path<String>, body: Bytes) -> Response {
    let faults = match serde_json::from_slice::<Faults>(&body) {
        Ok(Faults::One(f)) => vec![f],
        Ok(Faults::Many(v)) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, 100, &format!("invalid fault: {e}")).into_response(),
    };
    for f in &faults {
        let kinds = usize::from(f.status.is_some()) + usize::from(f.drop);
        if kinds > 1 || (kinds == 0 && f.delay_ms.is_none()) || f.times == 0 {
            return error(
                StatusCode::BAD_REQUEST,
                100,
                "a fault has one of status or drop (optionally with delayMs).into_response(), or delayMs alone, and times >= 1",
            ).into_response();
        }
        if f.status.is_some_and(|s| !(100..=599).contains(&s)) {
            return error(StatusCode::BAD_REQUEST, 100, "status must be an HTTP status code").into_response();
        }
    }
    match st.lock().subs.get_mut(&id) {
        Some(sub) => {
            sub.faults.extend(faults);
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, 102, "no such subscription").into_response(),
    }
}

async fn clear_faults(AxState(st): St, Path(id): Path<String>) -> Response {
    match st.lock().subs.get_mut(&id) {
        Some(sub) => {
            sub.faults.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, 102, "no such subscription").into_response(),
    }
}

#[derive(Deserialize)]
struct MessageQuery {
    subscription: Option<String>,
}

async fn list_messages(AxState(st): St, Query(q): Query<MessageQuery>) -> Json<Value> {
    let inner = st.lock();
    let items: Vec<&RecordedMessage> =
        inner.messages.iter().filter(|m| q.subscription.as_deref().is_none_or(|s| s == m.subscription_id)).collect();
    Json(json!({ "items": items }))
}

/// How many messages each subscription received: `{"total","counts":{id:n}}`
/// (cheap to read for thousands of subscriptions).
async fn received(AxState(st): St) -> Json<Value> {
    let inner = st.lock();
    let counts: HashMap<&str, u64> =
        inner.subs.iter().filter(|(_, s)| s.received > 0).map(|(id, s)| (id.as_str(), s.received)).collect();
    Json(json!({"total": inner.messages.len(), "counts": counts}))
}

async fn clear_messages(AxState(st): St) -> StatusCode {
    st.lock().messages.clear();
    StatusCode::NO_CONTENT
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The RFC 8030 push endpoint.
async fn push(
    AxState(st): St,
    Path(id): Path<String>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (keys, channel, app_server_key, fault) = match st.gate(&id) {
        Gate::Unknown => return error(StatusCode::NOT_FOUND, 102, "no such subscription").into_response(),
        Gate::Expired => return error(StatusCode::GONE, 103, "subscription expired").into_response(),
        Gate::Open { keys, channel, app_server_key, fault } => (keys, channel, app_server_key, fault),
    };
    if let Some(fault) = fault {
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fault.drop {
            let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            resp.extensions_mut().insert(DropConnection);
            return resp;
        }
        if let Some(status) = fault.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = error(status, 999, "fault injected by the test").into_response();
            if let Some(ra) = fault.retry_after.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
                resp.headers_mut().insert("retry-after", ra);
            }
            return resp;
        }
    }
    match accept(&st, &id, keys.as_deref(), app_server_key.as_deref(), &headers, &body) {
        Ok(mut message) => {
            message.http_version = format!("{version:?}");
            if let Some((uaid, channel_id)) = &channel {
                message.relayed = true;
                crate::ws::relay(&st, uaid, channel_id, &message, &body);
            }
            let location = format!("{}/messages/{}", st.base_url, message.id);
            let ttl = message.ttl;
            {
                let mut inner = st.lock();
                if let Some(sub) = inner.subs.get_mut(&id) {
                    sub.received += 1;
                }
                inner.messages.push(message);
            }
            let mut resp = StatusCode::CREATED.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert("location", v);
            }
            resp.headers_mut().insert("ttl", HeaderValue::from(ttl));
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// Every check a push service makes, in the order a real one makes them.
fn accept(
    st: &State,
    id: &str,
    keys: Option<&ReceiverKeys>,
    app_server_key: Option<&[u8]>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<RecordedMessage, ApiError> {
    let bad = |msg: &str| error(StatusCode::BAD_REQUEST, 110, msg);
    let ttl = header(headers, "ttl")
        .ok_or_else(|| bad("missing TTL header"))?
        .trim()
        .parse::<u64>()
        .map_err(|_| bad("TTL must be a non-negative integer"))?;
    let urgency = header(headers, "urgency").map(str::to_owned);
    if let Some(u) = &urgency {
        u.parse::<Urgency>().map_err(|e| bad(&e.to_string()))?;
    }
    let topic = header(headers, "topic").map(str::to_owned);
    if let Some(t) = &topic {
        Topic::new(t).map_err(|e| bad(&e.to_string()))?;
    }

    let verified = match header(headers, "authorization") {
        Some(auth) => {
            let v = vapid::verify(auth, header(headers, "crypto-key"), &st.base_url, SystemTime::now())
                .map_err(|e| error(StatusCode::UNAUTHORIZED, 112, &e.to_string()))?;
            if app_server_key.is_some_and(|k| k != v.public_key.as_slice()) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    109,
                    "the VAPID credentials in the authorization header do not correspond to the credentials used to create the subscriptions.",
                ));
            }
            Some(v)
        }
        None if app_server_key.is_some() => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                112,
                "missing VAPID authorization: this subscription was made with an applicationServerKey",
            ))
        }
        None => None,
    };

    if body.len() > MAX_BODY {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            104,
            &format!("body is {} octets; at most {MAX_BODY} are accepted", body.len()),
        ));
    }
    let encoding = header(headers, "content-encoding").map(|e| e.trim().to_ascii_lowercase());
    let Some(keys) = keys else {
        // A browser's own subscription: check the shape, relay the body.
        match (encoding.as_deref(), body.is_empty()) {
            (None, true) | (Some("aes128gcm"), false) => {}
            (Some("aesgcm"), false) => {
                if header(headers, "encryption").is_none() || header(headers, "crypto-key").is_none() {
                    return Err(bad("aesgcm needs the Encryption and Crypto-Key headers"));
                }
            }
            (None, false) => return Err(bad("a body without Content-Encoding")),
            (Some(_), true) => return Err(bad("Content-Encoding without a body")),
            (Some(other), false) => return Err(bad(&format!("unsupported Content-Encoding {other:?}"))),
        }
        return Ok(record(st, id, encoding, ttl, urgency, topic, None, body.len(), verified, headers));
    };
    let plaintext = match (encoding.as_deref(), body.is_empty()) {
        (None, true) => None,
        (Some("aes128gcm"), false) => Some(keys.decrypt_aes128gcm(body).map_err(|e| bad(&e.to_string()))?),
        (Some("aesgcm"), false) => {
            let params = AesGcmParams::from_headers(
                header(headers, "encryption").ok_or_else(|| bad("aesgcm without an Encryption header"))?,
                header(headers, "crypto-key").ok_or_else(|| bad("aesgcm without a Crypto-Key header"))?,
            )
            .map_err(|e| bad(&e.to_string()))?;
            Some(keys.decrypt_aesgcm(body, &params).map_err(|e| bad(&e.to_string()))?)
        }
        (None, false) => return Err(bad("a body without Content-Encoding")),
        (Some(_), true) => return Err(bad("Content-Encoding without a body")),
        (Some(other), false) => return Err(bad(&format!("unsupported Content-Encoding {other:?}"))),
    };

    Ok(record(st, id, encoding, ttl, urgency, topic, plaintext, body.len(), verified, headers))
}

#[allow(clippy::too_many_arguments)]
fn record(
    st: &State,
    id: &str,
    encoding: Option<String>,
    ttl: u64,
    urgency: Option<String>,
    topic: Option<String>,
    plaintext: Option<Vec<u8>>,
    body_length: usize,
    vapid: Option<tocsin_protocol::vapid::VerifiedVapid>,
    headers: &HeaderMap,
) -> RecordedMessage {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    RecordedMessage {
        id: st.new_id(),
        subscription_id: id.to_owned(),
        received_at: now_ms(),
        encoding,
        ttl,
        urgency,
        topic,
        payload: plaintext.as_ref().and_then(|p| String::from_utf8(p.clone()).ok()),
        payload_base64: plaintext.as_ref().map(b64::encode),
        body_length,
        http_version: String::new(),
        vapid,
        headers,
        relayed: false,
        ack_code: None,
    }
}
