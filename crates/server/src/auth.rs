//! API tokens: `Authorization: Bearer <token>`, each with a scope
//! ([`TokenScope`]: `read`, `send` or `admin`). Only a token's SHA-256 is
//! stored; a token is 32 random bytes, so a fast hash is the right one.
//!
//! A handler names what it requires by the extractor it takes:
//! [`Admin`], [`Sender`], [`Reader`] or [`MessageReader`] act on one app
//! (the path's, resolved by [`crate::app`]) and carry it; [`ServerWide`]
//! is for routes that are no app's (`POST /v1/apps`, `/metrics`) and needs
//! a token made without `--app`. A missing or unknown token is 401
//! `unauthorized`; a known one outside its scope is 403
//! `insufficient-scope`; a token of one app under another is 404
//! `app-not-found`, as if that app did not exist.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tocsin_store_api::{AppId, TokenScope};

use crate::app::App;
use crate::error::{ApiError, ErrorId};
use crate::AppState;

/// The shortest `TOCSIN_ADMIN_TOKEN` accepted at start.
pub const MIN_ENV_TOKEN_LEN: usize = 32;

/// The longest bearer token looked at (tokens are 47 characters; the
/// admin token from the environment may be longer).
const MAX_TOKEN_LEN: usize = 512;

/// How often at most a token's `last used` is written, ms.
const TOUCH_EVERY_MS: i64 = 60_000;

/// What a route requires of the caller's token.
pub trait Requirement: Send + Sync + 'static {
    /// The scopes that may, for the error message and the OpenAPI description.
    const SCOPES: &'static [&'static str];
    /// Whether a token of `scope` may call the route.
    fn allows(scope: TokenScope) -> bool;
}

/// Only `admin` tokens.
pub struct AdminScope;
impl Requirement for AdminScope {
    const SCOPES: &'static [&'static str] = &["admin"];
    fn allows(scope: TokenScope) -> bool {
        scope == TokenScope::Admin
    }
}

/// `send` or `admin`: creating and cancelling messages.
pub struct SendScope;
impl Requirement for SendScope {
    const SCOPES: &'static [&'static str] = &["send", "admin"];
    fn allows(scope: TokenScope) -> bool {
        matches!(scope, TokenScope::Send | TokenScope::Admin)
    }
}

/// `read` or `admin`: reading subscriptions, totals, metrics.
pub struct ReadScope;
impl Requirement for ReadScope {
    const SCOPES: &'static [&'static str] = &["read", "admin"];
    fn allows(scope: TokenScope) -> bool {
        matches!(scope, TokenScope::Read | TokenScope::Admin)
    }
}

/// Any scope: reading messages (a `send` token reads what it sent).
pub struct MessageReadScope;
impl Requirement for MessageReadScope {
    const SCOPES: &'static [&'static str] = &["read", "send", "admin"];
    fn allows(_: TokenScope) -> bool {
        true
    }
}

/// Proof that the request carried a token whose scope `R` allows, for the
/// app it acts on.
pub struct Authorized<R: Requirement> {
    /// The app of the request, which the token may act on.
    pub app: Arc<App>,
    _scope: PhantomData<R>,
}

/// Proof of a token whose scope `R` allows, made for every app (no `--app`).
pub struct ServerWide<R: Requirement>(PhantomData<R>);

/// A valid token whose scope `R` allows, whatever app it is for (`GET
/// /v1/apps` shows an app's token its own app only).
pub struct AnyToken<R: Requirement> {
    /// The token's app, when it was made for one.
    pub app: Option<AppId>,
    /// The token's scope.
    pub scope: TokenScope,
    _scope: PhantomData<R>,
}

/// An `admin` token.
pub type Admin = Authorized<AdminScope>;
/// A `send` or `admin` token.
pub type Sender = Authorized<SendScope>;
/// A `read` or `admin` token.
pub type Reader = Authorized<ReadScope>;
/// Any token.
pub type MessageReader = Authorized<MessageReadScope>;

pub use tocsin_ops::tokens::{hash_token, new_token};

fn rate_limited(wait: std::time::Duration) -> ApiError {
    crate::limits::rate_limited(wait, "too many failed authentications from this address")
}

use tocsin_ops::now_ms;

/// The bearer token of a request, if it has one of a plausible length.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN)
}

/// The scope of the request's token and the app it was made for: 401 when
/// there is none, or it is unknown.
pub async fn token_scope(parts: &Parts, state: &AppState) -> Result<(TokenScope, Option<AppId>), ApiError> {
    // Failed authentications are limited per address, but a valid token is
    // never refused by that limit: the address may be shared (a proxy that
    // is not trusted, a NAT) or named by someone else, and failures sent
    // "as" the site's backend must not lock its own token out. Guessing
    // gains nothing from this: a token is 32 random bytes.
    let ip = state.limits.client(&parts.extensions, &parts.headers);
    let failed = || match state.limits.auth_failures.take(ip) {
        Ok(()) => ApiError::unauthorized(),
        Err(wait) => rate_limited(wait),
    };
    let token = bearer(&parts.headers).ok_or_else(failed)?;
    let hash = hash_token(token);
    // Hashes are compared, not tokens, and in constant time.
    if state
        .admin_token_hash
        .as_deref()
        .is_some_and(|h| tocsin_protocol::subscription::same_secret(h.as_bytes(), hash.as_bytes()))
    {
        return Ok((TokenScope::Admin, None));
    }
    let row = state
        .store
        .token(&hash)
        .await
        .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot check the token", &e))?
        .ok_or_else(failed)?;
    let now = now_ms();
    if row.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_MS) {
        let store = state.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(&hash, now).await {
                tracing::debug!(error = %e, "could not record a token's use");
            }
        });
    }
    Ok((row.scope, row.app))
}

/// The request's token, checked against `R`: its app and scope.
async fn allowed<R: Requirement>(parts: &Parts, state: &AppState) -> Result<(Option<AppId>, TokenScope), ApiError> {
    let (scope, app) = token_scope(parts, state).await?;
    if R::allows(scope) {
        Ok((app, scope))
    } else {
        Err(ApiError::new(
            ErrorId::InsufficientScope,
            format!("a {} token may not do this; it needs one of: {}", scope.as_str(), R::SCOPES.join(", ")),
        ))
    }
}

impl<R: Requirement> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token_app, _) = allowed::<R>(parts, state).await?;
        let app = crate::app::resolve(parts, state).await?;
        // The app boundary for tokens: one made for another app learns
        // nothing of this one, not even that it exists.
        if token_app.is_some_and(|t| t != app.id) {
            return Err(ApiError::new(ErrorId::AppNotFound, format!("no app named {:?}", app.name)));
        }
        Ok(Self { app, _scope: PhantomData })
    }
}

impl<R: Requirement> FromRequestParts<AppState> for ServerWide<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match allowed::<R>(parts, state).await?.0 {
            None => Ok(Self(PhantomData)),
            Some(_) => Err(ApiError::new(
                ErrorId::ServerTokenRequired,
                "this is not one app's: it needs a token made without --app",
            )),
        }
    }
}

impl<R: Requirement> FromRequestParts<AppState> for AnyToken<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (app, scope) = allowed::<R>(parts, state).await?;
        Ok(Self { app, scope, _scope: PhantomData })
    }
}
