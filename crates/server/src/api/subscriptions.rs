//! `/v1/subscriptions`: list and read (a `read` or `admin` token), delete
//! (`admin`).

use super::*;
use crate::auth::{Admin, Reader};
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use tocsin_store_api::PageRow;
use tocsin_store_api::Target;

/// Subscriptions by id, with cursor paging; filter by `topic`, `userId`
/// or a segment expression (`where`).
#[utoipa::path(get, path = "/v1/subscriptions", security(("token" = ["read", "admin"])),
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query), ("topic" = Option<String>, Query),
        ("userId" = Option<String>, Query), ("where" = Option<String>, Query)),
    responses((status = 200, description = "{\"items\":[SubscriptionView],\"nextCursor\"}"), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_subscriptions(
    token: Reader,
    State(st): State<AppState>,
    Q(q): Q<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let n = limit(&q)?;
    let after = match &q.cursor {
        None => 0,
        Some(c) => {
            c.parse::<i64>().map_err(|_| ApiError::new(ErrorId::InvalidCursor, "cursor is not one this API gave"))?
        }
    };
    if q.topic.iter().chain(q.user_id.iter()).any(|f| f.contains('\0')) {
        return Err(ApiError::new(ErrorId::InvalidFilter, "a topic or user id never contains U+0000"));
    }
    let target = match (&q.topic, &q.user_id, &q.condition) {
        (Some(t), None, None) => Target::Topic(t.clone()),
        (None, Some(u), None) => Target::UserIds(vec![u.clone()]),
        (None, None, Some(text)) => Target::Where(super::audience::condition(text)?),
        (None, None, None) => Target::All(true),
        _ => return Err(ApiError::new(ErrorId::InvalidFilter, "filter by one of topic, userId and where")),
    };
    let items = st
        .store
        .page_subscriptions(token.app.id, &target, None, after, None, n)
        .await
        .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot list subscriptions", &e))?;
    let next = (items.len() as i64 == n).then(|| items.last().map(|s| s.id().to_string())).flatten();
    // A row that cannot be read is left out (the engine counts it as
    // failed, `unreadable`); the cursor still moves past it.
    let items: Vec<SubscriptionView> = items.into_iter().filter_map(PageRow::readable).map(Into::into).collect();
    Ok(Json(json!({"items": items, "nextCursor": next})))
}

pub(crate) fn sub_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::new(ErrorId::SubscriptionNotFound, format!("no subscription {id}")))
}

/// One subscription.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", security(("token" = ["read", "admin"])),
    params(("id" = String, Path, description = "the subscription's id")),
    responses((status = 200, body = SubscriptionView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_subscription(
    token: Reader,
    State(st): State<AppState>,
    IdParam(id): IdParam,
) -> Result<Json<SubscriptionView>, ApiError> {
    match st.store.app_subscription(token.app.id, sub_id(&id)?).await {
        Ok(Some(s)) => Ok(Json(s.into())),
        Ok(None) => Err(ApiError::new(ErrorId::SubscriptionNotFound, format!("no subscription {id}"))),
        Err(e) => Err(ApiError::storage(ErrorId::StorageFailed, "cannot read the subscription", &e)),
    }
}

/// Deletes one subscription.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", security(("token" = ["admin"])),
    params(("id" = String, Path, description = "the subscription's id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn remove_subscription(
    token: Admin,
    State(st): State<AppState>,
    IdParam(id): IdParam,
) -> Result<StatusCode, ApiError> {
    match st.store.delete_subscription(token.app.id, sub_id(&id)?, now_ms()).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::new(ErrorId::SubscriptionNotFound, format!("no subscription {id}"))),
        Err(e) => Err(ApiError::storage(ErrorId::StorageFailed, "cannot delete the subscription", &e)),
    }
}
