//! Apps and their VAPID keys: creating an app (with its first key),
//! rotating its key, and the key the default app starts with.

use tocsin_protocol::VapidKey;
use tocsin_store_api::{valid_app_name, AppId, AppRow, AppStore, NewApp, StoreError, VapidKeyRow};

/// Why an app could not be created, or its key made.
#[derive(Debug, thiserror::Error)]
pub enum CreateAppError {
    /// The name is not a slug.
    #[error("an app's name is 1 to 40 of a-z, 0-9 and -")]
    Name,
    /// The name is taken.
    #[error("an app named {0:?} exists")]
    Exists(String),
    /// The VAPID subject is not `mailto:` or `https:`.
    #[error(transparent)]
    Subject(#[from] tocsin_protocol::VapidError),
    /// A CORS origin is not a valid header value.
    #[error("invalid CORS origin {0:?}")]
    Origin(String),
    /// A VAPID subject Apple's push service refuses (the text says why).
    #[error("{0}")]
    AppleSubject(String),
    /// No randomness for the key pair.
    #[error("cannot make a key pair: {0}")]
    Key(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates an app with a new VAPID key pair (`tocsin app create` and
/// `POST /v1/apps`); returns it with its public key (base64url). A subject
/// Apple's push service refuses is refused too, unless `any_subject`
/// (development: `--endpoint-policy any`, `--allow-apple-rejected-subject`).
pub async fn create_app(
    store: &dyn AppStore,
    new: &NewApp,
    any_subject: bool,
    now: i64,
) -> Result<(AppRow, String), CreateAppError> {
    if !valid_app_name(&new.name) {
        return Err(CreateAppError::Name);
    }
    if let Some(s) = &new.vapid_subject {
        let subject = tocsin_protocol::VapidSubject::new(s)?;
        match subject.apple_rejects() {
            Some(why) if !any_subject => return Err(CreateAppError::AppleSubject(why)),
            Some(why) => tracing::warn!("{why}"),
            None => {}
        }
    }
    if let Some(o) = new.cors_origins.iter().flatten().find(|o| http::HeaderValue::from_str(o).is_err()) {
        return Err(CreateAppError::Origin(o.clone()));
    }
    let key = VapidKey::generate().map_err(|e| CreateAppError::Key(e.to_string()))?;
    let row = store
        .create_app(new, &key.public_key_base64url(), &key.private_key_base64url(), now)
        .await?
        .ok_or_else(|| CreateAppError::Exists(new.name.clone()))?;
    Ok((row, key.public_key_base64url()))
}

/// Makes a new key pair the app's current one (`tocsin vapid rotate` and
/// `POST /v1/apps/{app}/vapid-keys`). Its older keys stay, and so do the
/// subscriptions made with them.
pub async fn rotate_key(store: &dyn AppStore, app: AppId, now: i64) -> Result<VapidKeyRow, CreateAppError> {
    let key = VapidKey::generate().map_err(|e| CreateAppError::Key(e.to_string()))?;
    Ok(store.make_vapid_key_current(app, &key.public_key_base64url(), &key.private_key_base64url(), now).await?)
}

/// A key pair given in the settings (`--vapid-public-key`, `--vapid-private-key`):
/// the public key may be left out (it follows from the private one).
pub type ConfiguredKey = (Option<String>, String);

/// Why the default app's key could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DefaultKeyError {
    /// The configured key pair is not a P-256 key pair, or none could be made.
    #[error(transparent)]
    Key(#[from] tocsin_protocol::VapidError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes sure the default app has a current VAPID key, at start-up: the
/// configured one (made current if it is not), else the stored one, else a
/// new one, generated and stored. Returns the current key.
pub async fn ensure_default_key(
    store: &dyn AppStore,
    configured: Option<&ConfiguredKey>,
    now: i64,
) -> Result<VapidKeyRow, DefaultKeyError> {
    let app = AppId::DEFAULT;
    Ok(match (configured, store.current_vapid_key(app).await?) {
        (Some((public, private)), current) => {
            let key = VapidKey::from_base64url(public.as_deref(), private)?;
            match current {
                Some(c) if c.public_key == key.public_key_base64url() => c,
                _ => {
                    store
                        .make_vapid_key_current(app, &key.public_key_base64url(), &key.private_key_base64url(), now)
                        .await?
                }
            }
        }
        (None, Some(current)) => current,
        (None, None) => {
            let key = VapidKey::generate()?;
            tracing::info!(public_key = %key.public_key_base64url(), "generated a VAPID key pair and stored it");
            store.make_vapid_key_current(app, &key.public_key_base64url(), &key.private_key_base64url(), now).await?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_store_api::memory::MemoryStore;

    #[tokio::test]
    async fn the_default_key_is_made_once_and_a_configured_one_wins() {
        let store = MemoryStore::new();
        let first = ensure_default_key(&store, None, 1).await.expect("made");
        let again = ensure_default_key(&store, None, 2).await.expect("read");
        assert_eq!(first.id, again.id, "made once, then read");
        let other = VapidKey::generate().expect("key");
        let configured = (None, other.private_key_base64url());
        let current = ensure_default_key(&store, Some(&configured), 3).await.expect("configured");
        assert_eq!(current.public_key, other.public_key_base64url());
        let bad = (None, "not a key".to_owned());
        assert!(matches!(ensure_default_key(&store, Some(&bad), 4).await, Err(DefaultKeyError::Key(_))));
    }

    #[tokio::test]
    async fn an_app_needs_a_slug_and_a_subject_apple_takes() {
        let store = MemoryStore::new();
        let named = |name: &str, subject: Option<&str>| NewApp {
            name: name.into(),
            vapid_subject: subject.map(str::to_owned),
            ..NewApp::default()
        };
        assert!(matches!(create_app(&store, &named("Shop!", None), false, 1).await, Err(CreateAppError::Name)));
        let apple = named("shop", Some("mailto:push@localhost"));
        assert!(matches!(create_app(&store, &apple, false, 1).await, Err(CreateAppError::AppleSubject(_))));
        let (row, public) = create_app(&store, &named("shop", None), false, 1).await.expect("created");
        assert_eq!(store.current_vapid_key(row.id).await.expect("store").map(|k| k.public_key), Some(public));
        assert!(matches!(create_app(&store, &named("shop", None), false, 2).await, Err(CreateAppError::Exists(_))));
    }
}
