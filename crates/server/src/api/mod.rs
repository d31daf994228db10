//! The routes and their handlers, one room per part of the API:
//! [`classic`] (`/api/…`, what browsers call), [`messages`] and
//! [`subscriptions`] (`/v1`, admin), [`ops`] (stats, health, metrics,
//! OpenAPI); [`input`] reads requests, [`views`] shapes answers, and
//! [`body_limit`] bounds request bodies before any handler runs.

pub mod body_limit;
pub mod classic;
pub mod input;
pub mod messages;
pub mod ops;
pub mod subscriptions;
pub mod views;

use crate::error::{ApiError, ErrorBody};
use crate::{AppState, ServerConfig};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode};

use axum::routing::{get, post};
use axum::Router;
use std::time::{SystemTime, UNIX_EPOCH};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;

/// The OpenAPI description, generated from the annotations below.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tocsin", description = "Self-hosted Web Push server: the classic /api contract and the versioned /v1 API."),
    paths(
        classic::vapid_public_key, classic::post_subscription, classic::delete_subscription, classic::push_all, classic::test_notification, classic::post_event,
        messages::create_message, messages::get_message, messages::cancel_message, messages::list_messages,
        subscriptions::list_subscriptions, subscriptions::get_subscription, subscriptions::remove_subscription, ops::stats,
        ops::healthz, ops::readyz, ops::metrics
    ),
    components(schemas(ErrorBody, views::SuccessBody, views::PublicKeyBody, messages::MessageRequest, views::MessageView, views::CountsView, views::SubscriptionView)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`tocsin token create --scope admin|send|read`). Each operation lists the \
                         scopes that may call it; another scope gets 403 insufficient-scope.",
                    ))
                    .build(),
            ),
        );
    }
}

/// `/metrics` alone, without a token: for `--metrics-listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(ops::open_metrics)).with_state(state)
}

/// Builds the router with its layers.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    let mut app = Router::new()
        .route("/api/vapid-public-key", get(classic::vapid_public_key))
        // The public routes that write take a `PublicLimit`: each request
        // costs a token of the caller's address.
        .route("/api/subscription", post(classic::post_subscription).delete(classic::delete_subscription))
        .route("/api/subscription/test", post(classic::test_notification))
        .route("/api/events", post(classic::post_event))
        .route("/api/push", post(classic::push_all))
        .route("/v1/messages", post(messages::create_message).get(messages::list_messages))
        .route("/v1/messages/{id}", get(messages::get_message).delete(messages::cancel_message))
        .route("/v1/subscriptions", get(subscriptions::list_subscriptions))
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::get_subscription).delete(subscriptions::remove_subscription),
        )
        .route("/v1/stats", get(ops::stats))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .merge(crate::web::routes())
        .fallback(|| async { ApiError::not_found("not-found", "no such route") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", format!("{method} is not allowed here"))
        })
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(axum::middleware::from_fn_with_state((config.body_limit, config.request_timeout), body_limit::guard))
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

use input::*;
use views::*;
