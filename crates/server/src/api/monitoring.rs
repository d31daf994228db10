//! For operators: `/v1/stats`, `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use super::*;
use crate::auth::{ReadScope, Reader, ServerWide};
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tocsin_protocol::PushService;
use utoipa::OpenApi;

/// The app's totals, and its subscriptions by push service.
#[utoipa::path(get, path = "/v1/stats", security(("token" = ["read", "admin"])), responses((status = 200, description = "{\"subscriptions\",\"messages\",\"messagesPending\",\"delivered\",\"failed\",\"removed\",\"subscriptionsByPushService\":{\"fcm\",\"mozilla\",\"apple\",\"wns\",\"other\"}}")))]
pub(crate) async fn stats(token: Reader, State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let db = |e: tocsin_store_api::StoreError| ApiError::storage(ErrorId::StorageFailed, "cannot read stats", &e);
    let stats = st.store.stats(token.app.id).await.map_err(db)?;
    let mut by_service: std::collections::BTreeMap<&str, i64> =
        PushService::ALL.iter().map(|p| (p.as_str(), 0)).collect();
    for (host, n) in st.store.count_by_host(token.app.id).await.map_err(db)? {
        *by_service.entry(PushService::of_host(&host).as_str()).or_default() += n;
    }
    let mut body = serde_json::to_value(stats).map_err(|e| db(tocsin_store_api::StoreError::Corrupt(e.to_string())))?;
    body["subscriptionsByPushService"] = json!(by_service);
    Ok(Json(body))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct DaysQuery {
    #[serde(default)]
    days: Option<i64>,
}

/// Per UTC day, the last `days` days (today included, oldest first):
/// subscriptions created and removed, messages created and their
/// deliveries, shown and clicked.
#[utoipa::path(get, path = "/v1/stats/daily", security(("token" = ["read", "admin"])),
    params(("days" = Option<i64>, Query, description = "1 to 366, default 30")),
    responses((status = 200, description = "{\"items\":[{\"date\",\"subscribed\",\"unsubscribed\",\"sent\",\"delivered\",\"shown\",\"clicked\"}]}: \
        date is YYYY-MM-DD (UTC); a subscription its browser replaced (oldEndpoint) is not counted as unsubscribed, and its \
        replacement keeps its creation day; messages are counted on the day they were created, purged ones not at all"),
        (status = 400, body = ErrorBody)))]
pub(crate) async fn daily(
    token: Reader,
    State(st): State<AppState>,
    Q(q): Q<DaysQuery>,
) -> Result<Json<Value>, ApiError> {
    let days = match q.days {
        None => 30,
        Some(d) if (1..=366).contains(&d) => d,
        Some(_) => return Err(ApiError::new(ErrorId::InvalidDays, "days must be between 1 and 366")),
    };
    let today = now_ms().div_euclid(tocsin_store_api::DAY_MS);
    let rows = st
        .store
        .daily_stats(token.app.id, today - days + 1, today)
        .await
        .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot read daily stats", &e))?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|d| {
            json!({"date": tocsin_store_api::day_to_date(d.day), "subscribed": d.subscribed, "unsubscribed": d.unsubscribed,
                "sent": d.sent, "delivered": d.delivered, "shown": d.shown, "clicked": d.clicked})
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Each push service origin this node has sent to since it started:
/// requests, outcomes, errors by class, latency and any `Retry-After`
/// back-off in force. Per node: with several nodes, ask each.
#[utoipa::path(get, path = "/v1/push-services", security(("token" = ["read", "admin"])),
    responses((status = 200, description = "{\"node\",\"items\":[{\"origin\",\"requests\",\"delivered\",\"gone\",\
        \"errors\":{\"rejected\",\"rateLimited\",\"serverErrors\",\"networkErrors\"},\"p50Ms\",\"p99Ms\",\"backoffSeconds\"}]}: \
        latencies are the upper bound of their power-of-two bucket of milliseconds; null before any request"),
        (status = 403, body = ErrorBody, description = "a token made for one app")))]
pub(crate) async fn push_services(_token: ServerWide<ReadScope>, State(st): State<AppState>) -> Json<Value> {
    Json(json!({"node": st.metrics.node(), "items": st.engine.push_services()}))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    st.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(ErrorId::DatabaseUnavailable, "the database does not answer")
            .with_retry_after(crate::error::RETRY_AFTER_SECONDS)
    })?;
    Ok(Json(json!({"status": "ok"})))
}

/// The content type `/metrics` answers with (OpenMetrics text, which
/// Prometheus reads); the OpenAPI description names the same.
pub(crate) const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus metrics (OpenMetrics text). Stored totals are cached for a
/// few seconds, not counted per scrape. Without a token here when
/// `--metrics-listen` serves them on an address of their own.
#[utoipa::path(get, path = "/metrics", security(("token" = ["read", "admin"])),
    responses((status = 200, content_type = METRICS_CONTENT_TYPE, body = String), (status = 401, body = ErrorBody)))]
pub(crate) async fn metrics(_token: ServerWide<ReadScope>, State(st): State<AppState>) -> Result<Response, ApiError> {
    open_metrics(State(st)).await
}

/// `/metrics` with no token, for `--metrics-listen`'s address only.
pub(crate) async fn open_metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let text = st
        .metrics
        .render(st.store.as_ref(), st.outbox.as_ref())
        .await
        .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot read stats", &e))?;
    Ok(([(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response())
}

pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
