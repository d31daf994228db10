//! `GET /v1/events/stream`: the app's events as server-sent events, live,
//! resumable with `Last-Event-ID` for as long as the outbox keeps them
//! (`--event-retention-hours`).
//!
//! A stream outlives the request that checked its token, so it checks the
//! token again every `RECHECK` (5 s) and ends once it is revoked; it ends anyway
//! after `--stream-max-seconds` (the client resumes with `Last-Event-ID`).
//! A node's slots are shared: at most [`PER_TOKEN`] per token, and no app
//! more than half of them.

use super::*;
use crate::auth::Reader;
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_store_api::{AppId, StoredEvent};

/// How often a stream looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// Events are streamed once they are this old: a transaction that wrote a
/// lower id may still be committing (PostgreSQL hands out ids before commit).
const SETTLE_MS: i64 = 1000;
/// Events read per query.
const PAGE: i64 = 500;
/// How often an open stream checks that its token still exists.
const RECHECK: Duration = Duration::from_secs(5);
/// Streams one token may hold open on a node.
pub const PER_TOKEN: usize = 8;

/// The node's stream slots, counted per token (its hash) and per app.
pub struct StreamSlots {
    max: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_token: HashMap<String, usize>,
    by_app: HashMap<AppId, usize>,
}

/// One stream's slot; dropping it (the stream ends) gives it back.
pub struct Slot {
    slots: Arc<StreamSlots>,
    token: String,
    app: AppId,
}

impl StreamSlots {
    /// `max` streams on this node.
    pub fn new(max: usize) -> Self {
        Self { max, held: Mutex::default() }
    }

    /// A slot for `token` in `app`, or why not: the node is full (503), or
    /// the token or app holds its share (429).
    fn take(self: &Arc<Self>, token: &str, app: AppId) -> Result<Slot, ApiError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.total >= self.max {
            return Err(ApiError::new(ErrorId::NodeStreamsFull, "this node serves no more event streams now")
                .with_retry_after(5));
        }
        if held.by_token.get(token).copied().unwrap_or(0) >= PER_TOKEN {
            return Err(ApiError::new(
                ErrorId::TooManyStreams,
                format!("a token may hold {PER_TOKEN} event streams open on a node"),
            )
            .with_retry_after(5));
        }
        if held.by_app.get(&app).copied().unwrap_or(0) >= (self.max / 2).max(1) {
            return Err(ApiError::new(
                ErrorId::TooManyStreams,
                "this app holds half of this node's event streams already",
            )
            .with_retry_after(5));
        }
        held.total += 1;
        *held.by_token.entry(token.to_owned()).or_default() += 1;
        *held.by_app.entry(app).or_default() += 1;
        Ok(Slot { slots: self.clone(), token: token.to_owned(), app })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                held.by_token.remove(&self.token);
            }
        }
        if let Some(n) = held.by_app.get_mut(&self.app) {
            *n -= 1;
            if *n == 0 {
                held.by_app.remove(&self.app);
            }
        }
    }
}

/// Where a stream is: the last event sent, those read and not yet sent, its
/// slot, when it checks its token next and when it ends.
struct Cursor {
    last: i64,
    queue: VecDeque<StoredEvent>,
    _slot: Slot,
    recheck_at: tokio::time::Instant,
    ends_at: tokio::time::Instant,
}

/// One event as an SSE message: `id`, `event` (its type) and `data`, the
/// same JSON as a webhook delivery of that one event.
fn sse(e: &StoredEvent) -> Event {
    let body = tocsin_store_api::delivery_body(std::slice::from_ref(e)).unwrap_or_default();
    Event::default().id(e.id.to_string()).event(e.kind.as_str()).data(body)
}

/// A `Last-Event-ID` header: an event id, a whole number from 0.
pub(crate) fn last_event_id(value: &[u8]) -> Result<i64, ApiError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::new(ErrorId::InvalidLastEventId, "Last-Event-ID must be an event id (a number)"))
}

/// The app's events as they happen (server-sent events).
#[utoipa::path(get, path = "/v1/events/stream", security(("token" = ["read", "admin"])),
    params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event id (the `id:` of the last event received)")),
    responses((status = 200, description = "text/event-stream: `id`, `event` (the type) and `data` ({\"type\",\"timestamp\",\"data\"}) per event"),
        (status = 400, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too-many-streams: the token holds 8 streams, or its app half of the node's"),
        (status = 503, body = ErrorBody, description = "too-many-streams: the node serves no more")))]
pub(crate) async fn events_stream(
    token: Reader,
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let app = token.app.id;
    let after = match headers.get("last-event-id") {
        Some(v) => last_event_id(v.as_bytes())?,
        None => st
            .outbox
            .last_event_id(app)
            .await
            .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot read the events", &e))?,
    };
    // The token's hash: what the slot is counted by, and what is checked
    // again while the stream is open (`Reader` has checked it once).
    let hash = crate::auth::bearer(&headers).map(crate::auth::hash_token).unwrap_or_default();
    let from_env = st.admin_token_hash.as_deref() == Some(hash.as_str());
    let slot = st.streams.take(&hash, app)?;
    let now = tokio::time::Instant::now();
    let cursor = Cursor {
        last: after,
        queue: VecDeque::new(),
        _slot: slot,
        recheck_at: now + RECHECK,
        ends_at: now + st.stream_max,
    };
    let (outbox, store) = (st.outbox.clone(), st.store.clone());
    let events = stream::unfold(cursor, move |mut c| {
        let (outbox, store, hash) = (outbox.clone(), store.clone(), hash.clone());
        async move {
            loop {
                let now = tokio::time::Instant::now();
                if now >= c.ends_at {
                    return None;
                }
                // The environment's admin token cannot be revoked; a stored
                // one can, and then the stream ends. A database that does
                // not answer ends it too: it cannot be told apart.
                if now >= c.recheck_at && !from_env {
                    if !matches!(store.token(&hash).await, Ok(Some(_))) {
                        tracing::info!("event stream closed: its token is revoked");
                        return None;
                    }
                    c.recheck_at = now + RECHECK;
                }
                if let Some(e) = c.queue.pop_front() {
                    c.last = e.id;
                    return Some((Ok(sse(&e)), c));
                }
                match outbox.events_after(app, c.last, now_ms() - SETTLE_MS, PAGE).await {
                    Ok(found) if !found.is_empty() => c.queue.extend(found),
                    Ok(_) => tokio::time::sleep(POLL).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream: cannot read the outbox");
                        tokio::time::sleep(POLL * 4).await;
                    }
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
