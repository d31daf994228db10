//! The app boundary, enforced here and nowhere else.
//!
//! A server holds several apps (sites or products), each with its own VAPID
//! keys, subscribers, messages, tokens and settings. A request acts on one
//! app: the `{app}` of `/apps/{app}/api/…` and `/v1/apps/{app}/…`, or
//! `default` on the routes without a prefix. Handlers never name an app
//! themselves: they take [`InApp`] (public routes) or
//! [`crate::auth::Authorized`] (token routes), which resolve it here, and
//! pass its [`AppId`] to the store, whose every query for an app's data
//! carries `app_id = …`. A token made for one app is refused under any
//! other with 404 `app-not-found`, and an id of another app is not found.
//!
//! [`Apps`] caches each app for a second, so that a key rotated or an app
//! created on another node is seen within that time without a database
//! read per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

// tokio's clock, so that tests can pause it.
use tokio::time::Instant;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use tocsin_store_api::{valid_app_name, AppId, AppRow, AppStore, StoreError, DEFAULT_APP};

use crate::error::{ApiError, ErrorId};
use crate::proof::UserIds;
use crate::AppState;

/// How long a cached app is used before it is read again.
const FRESH: Duration = Duration::from_secs(1);

/// An app as requests see it: its identity, current VAPID key and the
/// settings that apply to it (its own, or the server's flags).
pub struct App {
    /// Its id, which every store call on its data takes.
    pub id: AppId,
    /// Its name in paths (`/apps/{name}/api`): 1 to 40 of `a-z`, `0-9`, `-`.
    pub name: String,
    /// The id of the key new subscriptions are made with.
    pub key_id: i64,
    /// That key's public half, base64url (`GET …/api/vapid-public-key`).
    pub public_key: String,
    /// How `userId` from browsers is checked.
    pub user_ids: Arc<UserIds>,
    /// Origins its routes answer with CORS headers (`*` for any).
    pub cors_origins: Arc<Vec<String>>,
    /// Whether browsers may set their subscriptions' tags.
    pub client_tags: bool,
    /// Its label in `/metrics`, made once rather than per request.
    pub metric_label: crate::metrics::AppLabel,
    loaded: Instant,
    /// Set by the one request that reads a stale copy again; the others
    /// meanwhile go on with the stale copy (no stampede at each second).
    reloading: std::sync::atomic::AtomicBool,
}

impl App {
    /// Whether this is the `default` app (payloads then carry no `app`).
    pub fn is_default(&self) -> bool {
        self.id == AppId::DEFAULT
    }

    /// The name a payload carries as `app` (none for `default`, whose
    /// payloads stay as they were before apps existed).
    pub fn payload_name(&self) -> Option<&str> {
        (!self.is_default()).then_some(self.name.as_str())
    }

    /// Whether a browser page at `origin` may call this app's routes.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        self.cors_origins.iter().any(|o| o == "*" || o.as_bytes() == origin)
    }
}

/// The server's own settings, which an app without its own falls back to.
pub struct Fallback {
    /// `--user-signing-secret`.
    pub user_signing_secret: Option<String>,
    /// `--trust-client-user-ids`.
    pub trust_client_user_ids: bool,
    /// `--cors-origin`.
    pub cors_origins: Vec<String>,
    /// `--client-tags`.
    pub client_tags: bool,
}

/// Every app, cached by name.
pub struct Apps {
    store: Arc<dyn AppStore>,
    fallback: Fallback,
    server_user_ids: Arc<UserIds>,
    cache: RwLock<HashMap<String, Arc<App>>>,
    /// When every app was last read because a name was not in the cache
    /// (an app made on another node, or a name that is no app): at most
    /// once per [`FRESH`], so that requests for made-up names cannot turn
    /// into a database read each.
    last_miss: std::sync::Mutex<Option<Instant>>,
}

impl Apps {
    /// The registry over `store`.
    pub fn new(store: Arc<dyn AppStore>, fallback: Fallback) -> Self {
        let server_user_ids =
            Arc::new(UserIds::new(fallback.user_signing_secret.as_deref(), fallback.trust_client_user_ids));
        Self { store, fallback, server_user_ids, cache: RwLock::default(), last_miss: std::sync::Mutex::new(None) }
    }

    /// The app named `name`, if it exists (cached for a second).
    pub async fn get(&self, name: &str) -> Result<Option<Arc<App>>, StoreError> {
        let cached = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
        match cached {
            Some(app) if app.loaded.elapsed() < FRESH => Ok(Some(app)),
            Some(app) if app.reloading.swap(true, std::sync::atomic::Ordering::AcqRel) => Ok(Some(app)),
            Some(app) => {
                let loaded = self.load(name).await;
                // On failure the stale copy stays, and the next request tries again.
                app.reloading.store(false, std::sync::atomic::Ordering::Release);
                loaded
            }
            None => {
                {
                    let mut last = self.last_miss.lock().unwrap_or_else(|p| p.into_inner());
                    if last.is_some_and(|t| t.elapsed() < FRESH) {
                        return Ok(None);
                    }
                    *last = Some(Instant::now());
                }
                self.load_all().await?;
                Ok(self.cache.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned())
            }
        }
    }

    /// Reads every app (at start, and when a name is not known: one made
    /// on another node since).
    pub async fn load_all(&self) -> Result<(), StoreError> {
        let mut apps = HashMap::new();
        for row in self.store.apps().await? {
            let Some(key) = self.store.current_vapid_key(row.id).await? else {
                return Err(StoreError::Corrupt(format!("app {} has no current VAPID key", row.name)));
            };
            apps.insert(row.name.clone(), Arc::new(self.app(row, key.id, key.public_key)));
        }
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = apps;
        Ok(())
    }

    /// Reads the app again (after this node rotated its key, or when the
    /// cached copy is stale).
    pub async fn load(&self, name: &str) -> Result<Option<Arc<App>>, StoreError> {
        let Some(row) = self.store.app(name).await? else {
            self.cache.write().unwrap_or_else(|p| p.into_inner()).remove(name);
            return Ok(None);
        };
        let Some(key) = self.store.current_vapid_key(row.id).await? else {
            return Err(StoreError::Corrupt(format!("app {name} has no current VAPID key")));
        };
        let app = Arc::new(self.app(row, key.id, key.public_key));
        self.cache.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), app.clone());
        Ok(Some(app))
    }

    fn app(&self, row: AppRow, key_id: i64, public_key: String) -> App {
        let user_ids = match row.user_signing_secret.as_deref() {
            Some(secret) => Arc::new(UserIds::new(Some(secret), false)),
            None => self.server_user_ids.clone(),
        };
        let metric_label = crate::metrics::AppLabel { app: row.name.clone() };
        App {
            id: row.id,
            name: row.name,
            key_id,
            public_key,
            user_ids,
            cors_origins: Arc::new(row.cors_origins.unwrap_or_else(|| self.fallback.cors_origins.clone())),
            client_tags: row.client_tags.unwrap_or(self.fallback.client_tags),
            metric_label,
            loaded: Instant::now(),
            reloading: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// The name of the app a request path names: `/apps/{app}/…` or
/// `/v1/apps/{app}/…`, else `default` (for the CORS layer, which runs
/// before routing).
pub fn app_in_path(path: &str) -> &str {
    let rest = path.strip_prefix("/v1/apps/").or_else(|| path.strip_prefix("/apps/"));
    match rest {
        Some(rest) => rest.split('/').next().unwrap_or_default(),
        None => DEFAULT_APP,
    }
}

fn no_such_app(name: &str) -> ApiError {
    ApiError::new(ErrorId::AppNotFound, format!("no app named {name:?}"))
}

/// The app the request's path names, resolved once per request.
pub(crate) async fn resolve(parts: &mut Parts, st: &AppState) -> Result<Arc<App>, ApiError> {
    if let Some(app) = parts.extensions.get::<Arc<App>>() {
        return Ok(app.clone());
    }
    // Routes without `{app}` have no such parameter (or none at all).
    let name = match Path::<HashMap<String, String>>::from_request_parts(parts, st).await {
        Ok(Path(mut params)) => params.remove("app").unwrap_or_else(|| DEFAULT_APP.to_owned()),
        Err(_) => DEFAULT_APP.to_owned(),
    };
    if !valid_app_name(&name) {
        return Err(no_such_app(&name));
    }
    let app = st
        .apps
        .get(&name)
        .await
        .map_err(|e| ApiError::storage(ErrorId::StorageFailed, "cannot read the app", &e))?
        .ok_or_else(|| no_such_app(&name))?;
    parts.extensions.insert(app.clone());
    Ok(app)
}

/// The app of a public route (no token): `/apps/{app}/api/…`, or `default`.
pub struct InApp(pub Arc<App>);

impl FromRequestParts<AppState> for InApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        resolve(parts, st).await.map(InApp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_store_api::memory::MemoryStore;
    use tocsin_store_api::AppStore;
    use tocsin_store_api::NewApp;

    #[tokio::test(start_paused = true)]
    async fn names_it_does_not_know_are_read_at_most_once_a_second() -> Result<(), StoreError> {
        let store = Arc::new(MemoryStore::new());
        store.make_vapid_key_current(AppId::DEFAULT, "pub-1", "priv-1", 0).await?;
        let fallback = Fallback {
            user_signing_secret: None,
            trust_client_user_ids: false,
            cors_origins: Vec::new(),
            client_tags: true,
        };
        let apps = Apps::new(store.clone(), fallback);
        apps.load_all().await?;
        assert_eq!(apps.get("default").await?.map(|a| a.public_key.clone()), Some("pub-1".into()));
        assert!(apps.get("nope").await?.is_none(), "read every app: no such one");
        // Made meanwhile (another node): not read again within the second…
        store.create_app(&NewApp { name: "shop".into(), ..NewApp::default() }, "pub-s", "priv-s", 0).await?;
        assert!(apps.get("shop").await?.is_none());
        tokio::time::advance(FRESH).await;
        // …and found after it.
        assert_eq!(apps.get("shop").await?.map(|a| a.public_key.clone()), Some("pub-s".into()));
        // A rotation elsewhere is seen when the cached copy is a second old.
        store.make_vapid_key_current(AppId::DEFAULT, "pub-2", "priv-2", 1).await?;
        assert_eq!(apps.get("default").await?.map(|a| a.public_key.clone()), Some("pub-1".into()));
        tokio::time::advance(FRESH).await;
        assert_eq!(apps.get("default").await?.map(|a| a.public_key.clone()), Some("pub-2".into()));
        Ok(())
    }

    #[test]
    fn the_app_of_a_path() {
        assert_eq!(app_in_path("/api/subscription"), "default");
        assert_eq!(app_in_path("/apps/shop/api/subscription"), "shop");
        assert_eq!(app_in_path("/v1/apps/shop/messages/x"), "shop");
        assert_eq!(app_in_path("/v1/apps"), "default");
        assert_eq!(app_in_path("/apps/"), "");
    }
}
