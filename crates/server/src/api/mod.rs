//! The routes and their handlers, one room per part of the API:
//! [`classic`] (`/api/…`, what browsers call), [`messages`] and
//! [`subscriptions`] (`/v1`, with a token), [`audience`] (tags from the
//! backend, segments, audience counts), [`apps`] (apps and their VAPID
//! keys), [`webhooks`], [`stream`] (the event stream), [`monitoring`]
//! (stats, health, metrics, OpenAPI); [`input`] reads requests,
//! [`ab`] reads A/B tests and shows them, [`payload`] turns a message's payload into what is stored by its format
//! (classic, declarative, auto), [`views`] shapes answers, and
//! [`request_bounds`] bounds request bodies before any handler runs.
//!
//! Each app's routes are mounted twice: without a prefix for `default`
//! (`/api/…`, `/v1/…`) and under `/apps/{app}/api/…` and `/v1/apps/{app}/…`;
//! the handlers are the same, and learn their app from
//! [`crate::app`].

pub mod ab;
pub mod apps;
pub mod audience;
pub mod classic;
pub mod input;
pub mod messages;
pub mod monitoring;
pub mod payload;
pub mod request_bounds;
pub mod rules;
pub mod stream;
pub mod subscriptions;
pub mod views;
pub mod webhooks;

#[cfg(test)]
mod decoder_tests;

use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::{AppState, ServerConfig};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method};

use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;

/// The OpenAPI description, generated from the annotations below.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tocsin", description = "Self-hosted Web Push server: the classic /api contract and the versioned /v1 API. \
        A server holds several apps: each route under /api exists for every app under /apps/{app}/api, and each under /v1 \
        (but /v1/apps) under /v1/apps/{app}; the routes without a prefix are the app named default's."),
    paths(
        classic::vapid_public_key, classic::post_subscription, classic::delete_subscription, classic::push_all, classic::test_notification, classic::post_event,
        messages::create_message, messages::get_message, messages::cancel_message, messages::list_messages, messages::preview_message,
        apps::whoami, apps::list_apps, apps::post_app, apps::list_keys, apps::rotate, apps::retire,
        subscriptions::list_subscriptions, subscriptions::get_subscription, subscriptions::remove_subscription,
        audience::patch_subscription_tags, audience::patch_user_tags, audience::create_segment, audience::list_segments,
        audience::get_segment, audience::delete_segment, audience::count_audience, rules::get_rules, rules::put_rules, monitoring::stats, monitoring::daily, monitoring::push_services,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::delete_webhook, webhooks::test_webhook, stream::events_stream,
        monitoring::healthz, monitoring::readyz, monitoring::metrics
    ),
    components(schemas(ErrorBody, views::SuccessBody, views::PublicKeyBody, messages::MessageRequest, views::MessageView, views::CountsView, views::LocalTimeView, views::WaveView, ab::AbTestView, ab::AbPartView, ab::AbPartOfView, views::SubscriptionView,
        apps::AppView, apps::AppRequest, apps::VapidKeyView, webhooks::WebhookRequest, webhooks::WebhookView,
        audience::SegmentRequest, audience::SegmentView, audience::CountRequest, messages::PreviewRequest)),
    modifiers(&BearerAuth, &ErrorAnswers)
)]
pub struct ApiDoc;

/// Every operation's error answers have the one error schema: a `default`
/// answer (any status not listed: `{"error":{"id","message"}}`, the id one
/// of the catalogue's, which the schema enumerates), and the 503 any route
/// that reads the database may answer while it is away or full.
struct ErrorAnswers;

impl utoipa::Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let reads_database = !matches!(path.as_str(), "/healthz" | "/metrics");
            for op in
                [&mut item.get, &mut item.post, &mut item.delete, &mut item.put, &mut item.patch].into_iter().flatten()
            {
                let answers = &mut op.responses.responses;
                answers.entry("default".into()).or_insert_with(|| {
                    error("any other error of the catalogue (README, Errors): 400s for bad input, 401/403 for tokens, 408, 413, 429 with Retry-After").into()
                });
                if reads_database {
                    answers.entry("503".into()).or_insert_with(|| {
                        error("database-unavailable or storage-full, with Retry-After: nothing was changed").into()
                    });
                }
            }
        }
    }
}

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
    Router::new().route("/metrics", get(monitoring::open_metrics)).with_state(state)
}

/// An app's browser routes, under `/api` (default) and `/apps/{app}/api`.
fn classic_routes() -> Router<AppState> {
    Router::new()
        .route("/vapid-public-key", get(classic::vapid_public_key))
        // The public routes that write take a `PublicLimit`: each request
        // costs a token of the caller's address.
        .route("/subscription", post(classic::post_subscription).delete(classic::delete_subscription))
        .route("/subscription/test", post(classic::test_notification))
        .route("/events", post(classic::post_event))
        .route("/push", post(classic::push_all))
}

/// An app's token routes, under `/v1` (default) and `/v1/apps/{app}`.
fn app_routes() -> Router<AppState> {
    Router::new()
        .route("/messages", post(messages::create_message).get(messages::list_messages))
        .route("/messages/preview", post(messages::preview_message))
        .route("/messages/{id}", get(messages::get_message).delete(messages::cancel_message))
        .route("/subscriptions", get(subscriptions::list_subscriptions))
        .route("/subscriptions/{id}", get(subscriptions::get_subscription).delete(subscriptions::remove_subscription))
        .route("/subscriptions/{id}/tags", axum::routing::patch(audience::patch_subscription_tags))
        .route("/users/{id}/tags", axum::routing::patch(audience::patch_user_tags))
        .route("/segments", get(audience::list_segments).post(audience::create_segment))
        .route("/segments/{id}", get(audience::get_segment).delete(audience::delete_segment))
        .route("/audience/count", post(audience::count_audience))
        .route("/rules", get(rules::get_rules).put(rules::put_rules))
        .route("/stats", get(monitoring::stats))
        .route("/stats/daily", get(monitoring::daily))
        .route("/vapid-keys", get(apps::list_keys).post(apps::rotate))
        .route("/vapid-keys/{id}", axum::routing::delete(apps::retire))
        .route("/webhooks", get(webhooks::list_webhooks).post(webhooks::create_webhook))
        .route("/webhooks/{id}", axum::routing::delete(webhooks::delete_webhook))
        .route("/webhooks/{id}/test", post(webhooks::test_webhook))
        .route("/events/stream", get(stream::events_stream))
}

/// Builds the router with its layers.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    let apps = state.apps.clone();
    let app = Router::new()
        .nest("/api", classic_routes())
        .nest("/apps/{app}/api", classic_routes())
        .nest("/v1", app_routes())
        .nest("/v1/apps/{app}", app_routes())
        .route("/v1/apps", get(apps::list_apps).post(apps::post_app))
        .route("/v1/push-services", get(monitoring::push_services))
        .route("/v1/token", get(apps::whoami))
        .route("/healthz", get(monitoring::healthz))
        .route("/readyz", get(monitoring::readyz))
        .route("/metrics", get(monitoring::metrics))
        .route("/openapi.json", get(monitoring::openapi))
        .merge(crate::web::routes())
        .fallback(|| async { ApiError::new(ErrorId::NotFound, "no such route") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(ErrorId::MethodNotAllowed, format!("{method} is not allowed here"))
        })
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(axum::middleware::from_fn_with_state((config.body_limit, config.request_timeout), request_bounds::guard))
        .with_state(state);
    // CORS per app: the origins of the app the path names (its own, or the
    // server's `--cors-origin`). This layer runs before routing, so it reads
    // the app from the path itself.
    let origin = AllowOrigin::async_predicate(move |origin: HeaderValue, parts: &axum::http::request::Parts| {
        let apps = apps.clone();
        let name = crate::app::app_in_path(parts.uri.path()).to_owned();
        async move {
            if !tocsin_store_api::valid_app_name(&name) {
                return false;
            }
            matches!(apps.get(&name).await, Ok(Some(app)) if app.allows_origin(origin.as_bytes()))
        }
    });
    app.layer(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::PATCH])
            .allow_headers([axum::http::header::CONTENT_TYPE, axum::http::header::AUTHORIZATION]),
    )
    .layer(tower_http::trace::TraceLayer::new_for_http())
}

use tocsin_ops::now_ms;

use input::*;
use views::*;
