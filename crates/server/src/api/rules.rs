//! `/v1/rules`: an app's delivery rules (default time zone, quiet hours,
//! frequency caps), read with any token of the app and replaced with an
//! admin token.

use super::*;
use crate::auth::{Admin, MessageReader};
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use tocsin_store_api::tocsin_audience::rules::DeliveryRules;
use tocsin_store_api::StoreError;

impl ApiBody for DeliveryRules {
    const INVALID: ErrorId = ErrorId::InvalidRules;
}

fn storage(e: StoreError) -> ApiError {
    ApiError::storage(ErrorId::StorageFailed, "cannot read or write the app's rules", &e)
}

/// The app's delivery rules (`{}` when it has none).
#[utoipa::path(get, path = "/v1/rules", security(("token" = ["read", "send", "admin"])),
    responses((status = 200, description = "{\"defaultTimeZone\"?,\"quietHours\"?:{\"start\",\"end\"},\"frequencyCaps\"?:[{\"max\",\"per\",\"tag\"?}]}"),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn get_rules(
    token: MessageReader,
    State(st): State<AppState>,
) -> Result<Json<DeliveryRules>, ApiError> {
    Ok(Json(st.store.app_rules(token.app.id).await.map_err(storage)?))
}

/// Replaces the app's delivery rules; `{}` removes them all. They apply to
/// pages sent from then on.
#[utoipa::path(put, path = "/v1/rules", security(("token" = ["admin"])),
    request_body(content = Object, description = "{\"defaultTimeZone\"?: IANA name, \"quietHours\"?: {\"start\": \"22:00\", \"end\": \"07:00\"}, \"frequencyCaps\"?: [{\"max\": 1..100, \"per\": \"1m\"..\"30d\", \"tag\"?}] (at most 10), \"ratePerMinute\"?: the default of its messages}"),
    responses((status = 200, description = "the rules as stored"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn put_rules(
    token: Admin,
    State(st): State<AppState>,
    JsonBody(rules): JsonBody<DeliveryRules>,
) -> Result<Json<DeliveryRules>, ApiError> {
    rules.check().map_err(|e| ApiError::new(ErrorId::InvalidRules, e.to_string()))?;
    if !st.store.set_app_rules(token.app.id, &rules).await.map_err(storage)? {
        return Err(ApiError::new(ErrorId::AppNotFound, "the app is gone"));
    }
    tracing::info!(app = %token.app.name, "delivery rules replaced");
    Ok(Json(rules))
}
