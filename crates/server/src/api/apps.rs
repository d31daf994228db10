//! `/v1/apps` (list, create) and each app's VAPID keys
//! (`/v1/apps/{app}/vapid-keys`: list, rotate, retire).

use super::*;
use crate::auth::{Admin, AdminScope, AnyToken, MessageReadScope, ReadScope, Reader, ServerWide};
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tocsin_ops::apps::{create_app, rotate_key, CreateAppError};
use tocsin_store_api::{NewApp, RetireKey, StoreError, Target, VapidKeyInfo};
use utoipa::ToSchema;

/// An app as `GET /v1/apps` lists it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    /// Its name (the `{app}` of its routes).
    app: String,
    /// Its current VAPID public key.
    public_key: String,
    /// Its own VAPID subject, if it has one (else the server's).
    vapid_subject: Option<String>,
    /// How many subscriptions it has.
    subscriptions: i64,
    /// ms since the epoch.
    created_at: i64,
}

/// `POST /v1/apps`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRequest {
    /// A slug, `[a-z0-9-]{1,40}`.
    name: String,
    /// `mailto:` or `https:`; the server's `--vapid-subject` when absent.
    #[serde(default)]
    vapid_subject: Option<String>,
    /// The secret its site signs user ids with; the server's when absent.
    #[serde(default)]
    user_signing_secret: Option<String>,
    /// Origins its browser routes answer with CORS headers; the server's when absent.
    #[serde(default)]
    cors_origins: Option<Vec<String>>,
    /// Whether browsers may set its subscriptions' tags; the server's `--client-tags` when absent.
    #[serde(default)]
    client_tags: Option<bool>,
}

/// A VAPID key of an app.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VapidKeyView {
    /// Its id (for `DELETE …/vapid-keys/{id}`).
    id: i64,
    /// The public key, base64url.
    public_key: String,
    /// Whether new subscriptions are made with it.
    current: bool,
    /// ms since the epoch.
    created_at: i64,
    /// Subscriptions still made with it.
    subscriptions: i64,
}

impl From<VapidKeyInfo> for VapidKeyView {
    fn from(k: VapidKeyInfo) -> Self {
        Self {
            id: k.id,
            public_key: k.public_key,
            current: k.current,
            created_at: k.created_at,
            subscriptions: k.subscriptions,
        }
    }
}

fn db(e: StoreError) -> ApiError {
    ApiError::storage(ErrorId::StorageFailed, "cannot read or write apps", &e)
}

/// What the request's token may do: its scope, and the app it is for
/// (`null`: every app). For pages that grey out what it may not.
#[utoipa::path(get, path = "/v1/token", security(("token" = ["read", "send", "admin"])),
    responses((status = 200, description = "{\"scope\":\"admin\"|\"send\"|\"read\",\"app\":name|null}"), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(
    token: AnyToken<MessageReadScope>,
    State(st): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let app = match token.app {
        None => None,
        Some(id) => st.store.apps().await.map_err(db)?.into_iter().find(|a| a.id == id).map(|a| a.name),
    };
    Ok(Json(json!({"scope": token.scope, "app": app})))
}

/// Apps with their subscriber counts (a token made for one app sees that one).
#[utoipa::path(get, path = "/v1/apps", security(("token" = ["read", "admin"])),
    responses((status = 200, description = "{\"items\":[AppView]}"), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_apps(token: AnyToken<ReadScope>, State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut items = Vec::new();
    for row in st.store.apps().await.map_err(db)? {
        if token.app.is_some_and(|a| a != row.id) {
            continue;
        }
        let key = st.store.current_vapid_key(row.id).await.map_err(db)?;
        items.push(AppView {
            subscriptions: st.store.count_subscriptions(row.id, &Target::All(true)).await.map_err(db)?,
            public_key: key.map(|k| k.public_key).unwrap_or_default(),
            app: row.name,
            vapid_subject: row.vapid_subject,
            created_at: row.created_at,
        });
    }
    Ok(Json(json!({ "items": items })))
}

/// Creates an app with a VAPID key pair of its own.
#[utoipa::path(post, path = "/v1/apps", security(("token" = ["admin"])), request_body = AppRequest,
    responses((status = 201, description = "{\"app\",\"publicKey\"}"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not an admin token made without --app"), (status = 409, body = ErrorBody)))]
pub(crate) async fn post_app(
    _token: ServerWide<AdminScope>,
    State(st): State<AppState>,
    JsonBody(req): JsonBody<AppRequest>,
) -> Result<Response, ApiError> {
    let new = NewApp {
        name: req.name,
        vapid_subject: req.vapid_subject,
        user_signing_secret: req.user_signing_secret.filter(|s| !s.is_empty()),
        cors_origins: req.cors_origins,
        client_tags: req.client_tags,
    };
    let any_subject = matches!(st.policy, crate::EndpointPolicy::Any);
    let (app, key) = create_app(st.store.as_ref(), &new, any_subject, now_ms()).await.map_err(|e| match e {
        CreateAppError::Name => ApiError::new(ErrorId::InvalidAppName, e.to_string()),
        CreateAppError::Exists(_) => ApiError::new(ErrorId::AppExists, e.to_string()),
        CreateAppError::Subject(_) | CreateAppError::AppleSubject(_) => {
            ApiError::new(ErrorId::InvalidVapidSubject, e.to_string())
        }
        CreateAppError::Origin(_) => ApiError::new(ErrorId::InvalidCorsOrigin, e.to_string()),
        CreateAppError::Store(ref cause) => {
            ApiError::storage(ErrorId::UnableToCreateApp, "the app could not be created", cause)
        }
        CreateAppError::Key(_) => ApiError::internal(ErrorId::UnableToCreateApp, "the app could not be created", &e),
    })?;
    // This node knows it at once (others within a second).
    st.apps.load(&app.name).await.map_err(db)?;
    tracing::info!(app = %app.name, "app created");
    Ok((StatusCode::CREATED, Json(json!({"app": app.name, "publicKey": key}))).into_response())
}

/// The app's VAPID keys, with the subscriptions still on each.
#[utoipa::path(get, path = "/v1/apps/{app}/vapid-keys", security(("token" = ["read", "admin"])), params(("app" = String, Path, description = "the app's name (`/v1/vapid-keys` is `default`'s)")),
    responses((status = 200, description = "{\"items\":[VapidKeyView]}"), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_keys(token: Reader, State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let keys = st.store.vapid_keys(token.app.id).await.map_err(db)?;
    let items: Vec<VapidKeyView> = keys.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "items": items })))
}

/// Rotates: a new key pair becomes current. Subscriptions made with older
/// keys keep them (and keep receiving); tocsin.js moves each browser to the
/// new key on its next page load.
#[utoipa::path(post, path = "/v1/apps/{app}/vapid-keys", security(("token" = ["admin"])), params(("app" = String, Path, description = "the app's name (`/v1/vapid-keys` is `default`'s)")),
    responses((status = 201, body = VapidKeyView), (status = 404, body = ErrorBody)))]
pub(crate) async fn rotate(token: Admin, State(st): State<AppState>) -> Result<Response, ApiError> {
    let now = now_ms();
    let key = rotate_key(st.store.as_ref(), token.app.id, now).await.map_err(|e| match e {
        CreateAppError::Store(ref cause) => {
            ApiError::storage(ErrorId::UnableToRotate, "the key could not be rotated", cause)
        }
        _ => ApiError::internal(ErrorId::UnableToRotate, "the key could not be rotated", &e),
    })?;
    // This node answers with the new key at once; others within a second.
    st.apps.load(&token.app.name).await.map_err(db)?;
    tracing::info!(app = %token.app.name, key = key.id, "VAPID key rotated");
    let view =
        VapidKeyView { id: key.id, public_key: key.public_key, current: true, created_at: now, subscriptions: 0 };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ForceQuery {
    #[serde(default)]
    force: Option<String>,
}

/// Retires a key: refused for the current key (409 `key-is-current`) and
/// for one that subscriptions still use (409 `key-in-use`) unless
/// `?force=true`, which deletes those subscriptions with it.
#[utoipa::path(delete, path = "/v1/apps/{app}/vapid-keys/{id}", security(("token" = ["admin"])),
    params(("app" = String, Path, description = "the app's name (`/v1/vapid-keys` is `default`'s)"), ("id" = i64, Path, description = "the key's id"),
        ("force" = Option<bool>, Query, description = "retire it with the subscriptions still on it")),
    responses((status = 200, description = "{\"id\",\"removedSubscriptions\"}"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn retire(
    token: Admin,
    State(st): State<AppState>,
    IdParam(id): IdParam,
    Q(q): Q<ForceQuery>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::new(ErrorId::KeyNotFound, format!("the app has no key {id}"));
    let key_id: i64 = id.parse().map_err(|_| not_found())?;
    let force = matches!(q.force.as_deref(), Some("true" | "1"));
    match st.store.retire_vapid_key(token.app.id, key_id, force, now_ms()).await.map_err(db)? {
        RetireKey::Retired { removed } => {
            tracing::info!(app = %token.app.name, key = key_id, removed, "VAPID key retired");
            Ok(Json(json!({"id": key_id, "removedSubscriptions": removed})))
        }
        RetireKey::NotFound => Err(not_found()),
        RetireKey::Current => {
            Err(ApiError::new(ErrorId::KeyIsCurrent, "the current key cannot be retired: rotate first"))
        }
        RetireKey::InUse(n) => Err(ApiError::new(
            ErrorId::KeyInUse,
            format!("{n} subscriptions still use this key; retire it with ?force=true to delete them"),
        )),
    }
}

impl ApiBody for AppRequest {
    const INVALID: ErrorId = ErrorId::InvalidApp;
}
