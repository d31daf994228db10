//! `/v1/webhooks` (per app): register, list, remove and test the URLs
//! that are told what happened.

use super::*;
use crate::auth::{Admin, Reader};
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tocsin_store_api::WebhookRow;
use utoipa::ToSchema;

use tocsin_ops::webhooks::{register, Registration, WebhookError};

/// A webhook to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where deliveries are POSTed: `https://`, a public address (the
    /// endpoint policy of push endpoints applies).
    url: String,
    /// The event types it gets: `message.created`, `message.done`,
    /// `message.cancelled`, `subscription.created`, `subscription.updated`,
    /// `subscription.removed`, `delivery.failed`, `notification.shown`,
    /// `notification.clicked`.
    events: Vec<String>,
    /// A note for the operator (at most 256 characters).
    #[serde(default)]
    description: Option<String>,
}

/// A webhook as the API shows it (never its secret, but once at creation).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    id: String,
    url: String,
    events: Vec<&'static str>,
    description: Option<String>,
    created_at: String,
    /// `true` once deliveries have failed for about a day.
    failing: bool,
    failing_since: Option<String>,
    /// What the last failed attempt got (cleared by a success).
    last_error: Option<String>,
    /// Events waiting to be delivered.
    pending: i64,
}

impl From<WebhookRow> for WebhookView {
    fn from(w: WebhookRow) -> Self {
        Self {
            id: w.registered.id,
            url: tocsin_webhooks::redact_url(&w.registered.url),
            events: w.registered.events.iter().map(|e| e.as_str()).collect(),
            description: w.registered.description,
            created_at: rfc3339(w.registered.created_at),
            failing: w.failing_since.is_some(),
            failing_since: w.failing_since.map(rfc3339),
            last_error: w.last_error.map(|e| tocsin_webhooks::redact::redact_in(&e, &w.registered.url)),
            pending: w.pending,
        }
    }
}

fn refusal(e: WebhookError) -> ApiError {
    match e {
        WebhookError::Events(m) => ApiError::new(ErrorId::InvalidEvents, m),
        WebhookError::Description => ApiError::new(ErrorId::InvalidWebhook, e.to_string()),
        WebhookError::Url(m) => ApiError::new(ErrorId::InvalidWebhookUrl, m),
        WebhookError::TooMany => ApiError::new(ErrorId::TooManyWebhooks, e.to_string()),
        WebhookError::Store(e) => db(e),
    }
}

fn db(e: tocsin_store_api::StoreError) -> ApiError {
    ApiError::storage(ErrorId::StorageFailed, "the webhooks could not be read or written", &e)
}

/// Registers a webhook; the answer holds its signing secret, shown once.
#[utoipa::path(post, path = "/v1/webhooks", security(("token" = ["admin"])), request_body = WebhookRequest,
    responses((status = 201, description = "{\"id\",\"url\",\"events\",\"secret\":\"whsec_…\",\"createdAt\"}"),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_webhook(
    token: Admin,
    State(st): State<AppState>,
    JsonBody(req): JsonBody<WebhookRequest>,
) -> Result<Response, ApiError> {
    let registration = Registration::parse(&req.url, &req.events, req.description).map_err(refusal)?;
    st.policy
        .for_webhooks()
        .check(&registration.url)
        .await
        .map_err(|why| ApiError::new(ErrorId::InvalidWebhookUrl, format!("url is not allowed: {why}")))?;
    let secret = tocsin_webhooks::new_secret()
        .map_err(|_| ApiError::internal(ErrorId::UnableToCreateWebhook, "no randomness", &"rand"))?;
    let id = format!("wh_{}", new_id()?);
    let row = register(st.outbox.as_ref(), token.app.id, registration, id, secret.clone(), now_ms())
        .await
        .map_err(refusal)?;
    tracing::info!(webhook = %row.registered.id, app = %token.app.name, "webhook registered");
    let view = WebhookView::from(row);
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": view.id, "url": view.url, "events": view.events, "description": view.description,
            "secret": secret, "createdAt": view.created_at})),
    )
        .into_response())
}

/// The app's webhooks: each with whether it is failing and what waits.
#[utoipa::path(get, path = "/v1/webhooks", security(("token" = ["read", "admin"])),
    responses((status = 200, description = "{\"items\":[WebhookView]}")))]
pub(crate) async fn list_webhooks(
    token: Reader,
    State(st): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items: Vec<WebhookView> =
        st.outbox.webhooks(token.app.id).await.map_err(db)?.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "items": items })))
}

/// Removes a webhook and what waits for it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", security(("token" = ["admin"])),
    params(("id" = String, Path, description = "the webhook's id (`wh_…`)")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_webhook(
    token: Admin,
    State(st): State<AppState>,
    IdParam(id): IdParam,
) -> Result<StatusCode, ApiError> {
    if st.outbox.delete_webhook(token.app.id, &id).await.map_err(db)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorId::WebhookNotFound, format!("no webhook {id}")))
    }
}

/// Sends the webhook a `webhook.test` event.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", security(("token" = ["admin"])),
    params(("id" = String, Path, description = "the webhook's id (`wh_…`)")),
    responses((status = 202, description = "{\"eventId\"}"), (status = 404, body = ErrorBody)))]
pub(crate) async fn test_webhook(
    token: Admin,
    State(st): State<AppState>,
    IdParam(id): IdParam,
) -> Result<Response, ApiError> {
    match st.outbox.test_webhook(token.app.id, &id, now_ms()).await.map_err(db)? {
        Some(event) => {
            st.webhooks.wake();
            Ok((StatusCode::ACCEPTED, Json(json!({ "eventId": event }))).into_response())
        }
        None => Err(ApiError::new(ErrorId::WebhookNotFound, format!("no webhook {id}"))),
    }
}

impl ApiBody for WebhookRequest {
    const INVALID: ErrorId = ErrorId::InvalidWebhook;
}
