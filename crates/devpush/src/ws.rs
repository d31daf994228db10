//! Mozilla's WebSocket push protocol, as Firefox's push client speaks it:
//! `hello`, `register`, `unregister`, `notification`, `ack`/`nack`, `{}`
//! pings. A notification waits until the browser acknowledges it, and is sent
//! again after its next `hello`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use tocsin_protocol::b64;
use tokio::sync::mpsc;

use crate::state::{Out, RecordedMessage, State, Sub, Ua};

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

/// Takes a `GET /` that asked for a WebSocket: Mozilla's push protocol on it.
pub(crate) fn upgrade(state: Arc<State>, ws: WebSocketUpgrade) -> Response {
    // Firefox asks for the `push-notification` subprotocol and fails the
    // handshake unless it is echoed.
    ws.protocols(["push-notification"]).on_upgrade(move |socket| connection(state, socket))
}

/// `GET /uas`.
pub(crate) async fn list_uas(AxState(st): AxState<Arc<State>>) -> Json<Value> {
    let inner = st.lock();
    let items: Vec<Value> = inner
        .uas
        .iter()
        .map(|(uaid, ua)| {
            let channels = inner.subs.values().filter(|s| s.channel.as_ref().is_some_and(|(u, _)| u == uaid)).count();
            json!({"uaid": uaid, "connected": ua.conn.is_some(), "pending": ua.pending.len(), "channels": channels})
        })
        .collect();
    Json(json!({ "items": items }))
}

/// `POST /uas/{uaid}/disconnect` `{"holdMs"?: n}`.
pub(crate) async fn disconnect(AxState(st): AxState<Arc<State>>, Path(uaid): Path<String>, body: Bytes) -> Response {
    let hold = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("holdMs").and_then(Value::as_u64));
    let mut inner = st.lock();
    let Some(ua) = inner.uas.get_mut(&uaid) else { return (StatusCode::NOT_FOUND, "no such uaid").into_response() };
    if let Some(ms) = hold {
        ua.hold_until = Some(Instant::now() + Duration::from_millis(ms));
    }
    if let Some((_, tx)) = ua.conn.take() {
        let _ = tx.send(Out::Close);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Sends (or keeps for later) a push to the browser that owns the channel.
pub(crate) fn relay(st: &State, uaid: &str, channel_id: &str, message: &RecordedMessage, body: &[u8]) {
    let mut headers = serde_json::Map::new();
    if let Some(enc) = &message.encoding {
        headers.insert("encoding".into(), json!(enc));
        if enc == "aesgcm" {
            if let Some(e) = message.headers.get("encryption") {
                headers.insert("encryption".into(), json!(e));
            }
            if let Some(c) = message.headers.get("crypto-key") {
                headers.insert("crypto_key".into(), json!(c));
            }
        }
    }
    let mut n = json!({"messageType": "notification", "channelID": channel_id, "version": message.id});
    if !body.is_empty() {
        n["data"] = json!(b64::encode(body));
        n["headers"] = Value::Object(headers);
    }
    let text = n.to_string();
    let mut inner = st.lock();
    let ua = inner.uas.entry(uaid.to_owned()).or_default();
    ua.pending.push((message.id.clone(), text.clone()));
    if let Some((_, tx)) = &ua.conn {
        let _ = tx.send(Out::Text(text));
    }
}

fn new_uaid() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:032x}", nanos ^ (u128::from(CONNECTIONS.load(Ordering::Relaxed)) << 64))
}

async fn connection(st: Arc<State>, mut socket: WebSocket) {
    let conn_id = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    tracing::info!(conn_id, "push WebSocket connected");
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let mut uaid: Option<String> = None;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(t)) => {
                    if socket.send(Message::Text(t.into())).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close) | None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if !handle(&st, conn_id, &mut uaid, &tx, t.as_str()) {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    if let Some(uaid) = uaid {
        let mut inner = st.lock();
        if let Some(ua) = inner.uas.get_mut(&uaid) {
            if ua.conn.as_ref().is_some_and(|(id, _)| *id == conn_id) {
                ua.conn = None;
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// Handles one message from the browser; false closes the connection.
fn handle(st: &State, conn_id: u64, uaid: &mut Option<String>, tx: &mpsc::UnboundedSender<Out>, text: &str) -> bool {
    tracing::debug!(conn_id, text, "from the browser");
    let Ok(v) = serde_json::from_str::<Value>(text) else { return false };
    let send = |v: Value| {
        let _ = tx.send(Out::Text(v.to_string()));
    };
    match v.get("messageType").and_then(Value::as_str) {
        None => send(json!({})), // ping
        Some("hello") => {
            let given = v.get("uaid").and_then(Value::as_str).filter(|u| !u.is_empty()).map(str::to_owned);
            let id = given.unwrap_or_else(new_uaid);
            let mut inner = st.lock();
            let ua: &mut Ua = inner.uas.entry(id.clone()).or_default();
            if ua.hold_until.is_some_and(|t| Instant::now() < t) {
                return false;
            }
            ua.hold_until = None;
            if let Some((_, old)) = ua.conn.replace((conn_id, tx.clone())) {
                let _ = old.send(Out::Close);
            }
            send(json!({"messageType": "hello", "uaid": id, "status": 200, "use_webpush": true, "broadcasts": {}}));
            for (_, n) in &ua.pending {
                let _ = tx.send(Out::Text(n.clone()));
            }
            *uaid = Some(id);
        }
        Some("register") => {
            let Some(id) = uaid.clone() else { return false };
            let channel = v.get("channelID").and_then(Value::as_str).unwrap_or_default().to_owned();
            let key = v.get("key").and_then(Value::as_str).and_then(|k| b64::decode(k).ok());
            let sub_id = st.new_id();
            let endpoint = format!("{}/push/{sub_id}", st.base_url);
            st.lock().subs.insert(
                sub_id,
                Sub {
                    keys: None,
                    channel: Some((id, channel.clone())),
                    app_server_key: key,
                    expired: false,
                    attempts: 0,
                    attempt_times: Vec::new(),
                    received: 0,
                    faults: Default::default(),
                },
            );
            send(json!({"messageType": "register", "channelID": channel, "status": 200, "pushEndpoint": endpoint}));
        }
        Some("unregister") => {
            let channel = v.get("channelID").and_then(Value::as_str).unwrap_or_default().to_owned();
            let mut inner = st.lock();
            for sub in inner.subs.values_mut() {
                if sub.channel.as_ref().is_some_and(|(u, c)| Some(u) == uaid.as_ref() && *c == channel) {
                    sub.expired = true;
                }
            }
            send(json!({"messageType": "unregister", "channelID": channel, "status": 200}));
        }
        Some("ack") => {
            let updates = v.get("updates").and_then(Value::as_array).cloned().unwrap_or_default();
            for u in updates {
                let version = u.get("version").and_then(Value::as_str).unwrap_or_default();
                let code = u.get("code").and_then(Value::as_u64).unwrap_or(100);
                answered(st, uaid.as_deref(), version, code);
            }
        }
        Some("nack") => {
            let version = v.get("version").and_then(Value::as_str).unwrap_or_default();
            let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
            answered(st, uaid.as_deref(), version, code);
        }
        Some(_) => {} // broadcast_subscribe and others: tolerated
    }
    true
}

fn answered(st: &State, uaid: Option<&str>, version: &str, code: u64) {
    let mut inner = st.lock();
    if let Some(m) = inner.messages.iter_mut().find(|m| m.id == version) {
        m.ack_code = Some(code);
    }
    if let Some(ua) = uaid.and_then(|u| inner.uas.get_mut(u)) {
        ua.pending.retain(|(v, _)| v != version);
    }
}
