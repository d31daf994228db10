//! `GET /v1/events/stream`: the app's events as server-sent events, live,
//! resumable with `Last-Event-ID` for as long as the outbox keeps them
//! (`--event-retention-hours`).

use super::*;
use crate::auth::Reader;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tocsin_store::StoredEvent;

/// How often a stream looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// Events are streamed once they are this old: a transaction that wrote a
/// lower id may still be committing (PostgreSQL hands out ids before commit).
const SETTLE_MS: i64 = 1000;
/// Events read per query.
const PAGE: i64 = 500;

/// One event as an SSE message: `id`, `event` (its type) and `data`, the
/// same JSON as a webhook delivery of that one event.
fn sse(e: &StoredEvent) -> Event {
    let body = tocsin_store::delivery_body(std::slice::from_ref(e)).unwrap_or_default();
    Event::default().id(e.id.to_string()).event(e.kind.as_str()).data(body)
}

/// The app's events as they happen (server-sent events).
#[utoipa::path(get, path = "/v1/events/stream", security(("token" = ["read", "admin"])),
    params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event id (the `id:` of the last event received)")),
    responses((status = 200, description = "text/event-stream: `id`, `event` (the type) and `data` ({\"type\",\"timestamp\",\"data\"}) per event"),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody, description = "too many streams on this node")))]
pub(crate) async fn events_stream(
    token: Reader,
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = st.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too-many-streams", "this node serves no more event streams now")
    })?;
    let app = token.app.id;
    let after = match headers.get("last-event-id") {
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request("invalid-last-event-id", "Last-Event-ID must be an event id (a number)")
        })?,
        None => st
            .outbox
            .last_event_id(app)
            .await
            .map_err(|e| ApiError::storage("database-unavailable", "cannot read the events", &e))?,
    };
    let outbox = st.outbox.clone();
    let events =
        stream::unfold((after, VecDeque::<StoredEvent>::new(), permit), move |(mut last, mut queue, permit)| {
            let outbox = outbox.clone();
            async move {
                loop {
                    if let Some(e) = queue.pop_front() {
                        last = e.id;
                        return Some((Ok(sse(&e)), (last, queue, permit)));
                    }
                    match outbox.events_after(app, last, now_ms() - SETTLE_MS, PAGE).await {
                        Ok(found) if !found.is_empty() => queue.extend(found),
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
