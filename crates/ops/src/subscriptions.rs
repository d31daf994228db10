//! Subscribing: which VAPID key a subscription is made with, replacing a
//! browser's old subscription (`pushsubscriptionchange`) only with its
//! auth secret, and storing it. The caller has read and checked the input
//! (the subscription itself, a signed user id, the endpoint policy).

use tocsin_protocol::Subscription;
use tocsin_store_api::tocsin_audience::{Language, TagPatch, TimeZoneName};
use tocsin_store_api::{AppId, AppStore, NewSubscription, StoreError, StoredSubscription, SubscriptionStore};

/// The app a browser subscribes to, as the caller knows it.
#[derive(Debug, Clone, Copy)]
pub struct SubscribingApp<'a> {
    /// The app.
    pub id: AppId,
    /// Its current VAPID key's id.
    pub key_id: i64,
    /// Its current VAPID key's public key (base64url).
    pub public_key: &'a str,
}

/// A browser's subscription as it was posted.
#[derive(Debug, Clone)]
pub struct Subscribe {
    /// The subscription.
    pub subscription: Subscription,
    /// Its user (already proven by the site's signature), if any.
    pub user_id: Option<String>,
    /// Its topics, if the request named them.
    pub topics: Option<Vec<String>>,
    /// The `applicationServerKey` the browser subscribed with, if it said.
    pub named_key: Option<String>,
    /// The subscription it replaces: its endpoint, and the auth secret that
    /// proves it is the caller's (`oldEndpoint`, `oldKeys.auth`).
    pub replaces: Option<(String, Option<Vec<u8>>)>,
    /// Changes to its tags (the caller has checked that its app takes
    /// tags from browsers).
    pub tags: Option<TagPatch>,
    /// Its browser's language.
    pub language: Option<Language>,
    /// Its browser's time zone.
    pub time_zone: Option<TimeZoneName>,
}

/// Why a subscription was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The named `applicationServerKey` is not one of the app's keys.
    #[error("applicationServerKey is not one of this app's VAPID keys")]
    UnknownKey,
    /// `oldEndpoint` names a stored subscription, without its auth secret.
    #[error("oldEndpoint names a stored subscription; replacing it needs its auth secret in oldKeys.auth")]
    OldNotProven,
    /// The endpoint is stored in another app.
    #[error("{0}")]
    InOtherApp(String),
    /// The endpoint is stored with other keys: the caller would take over
    /// the subscription (its user, topics and messages) with a secret of
    /// its own choosing.
    #[error(
        "this endpoint is stored with other keys: re-posting a subscription needs its own keys.auth \
         (a browser that renews its keys gets a new endpoint)"
    )]
    NotProven,
    /// The change would leave the subscription with more than 50 tags.
    #[error("a subscription carries at most 50 tags")]
    TooManyTags,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SubscribeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::InOtherApp(m),
            StoreError::NotProven => Self::NotProven,
            StoreError::TooManyTags => Self::TooManyTags,
            e => Self::Store(e),
        }
    }
}

/// Stores a browser's subscription (an upsert by endpoint): made with the
/// key it names (else the current one; a row already stored with the same
/// keys keeps its own, as a client re-posting it after a rotation has not
/// moved), and, when it replaces an old one whose auth secret it shows,
/// with the old one's user and topics, the old one going.
pub async fn subscribe<S: SubscriptionStore + AppStore + ?Sized>(
    store: &S,
    app: SubscribingApp<'_>,
    req: Subscribe,
    now: i64,
) -> Result<StoredSubscription, SubscribeError> {
    let (vapid_key_id, keep_stored_key) = match req.named_key.as_deref() {
        None => (app.key_id, true),
        Some(k) if k == app.public_key => (app.key_id, false),
        Some(k) => (store.vapid_key_id(app.id, k).await?.ok_or(SubscribeError::UnknownKey)?, false),
    };
    let replaced = match &req.replaces {
        Some((old, _)) if old != req.subscription.endpoint().as_str() => {
            store.subscription_by_endpoint(app.id, old).await?
        }
        _ => None,
    };
    let (mut user_id, mut topics, mut tags) = (req.user_id, req.topics, req.tags);
    let (mut language, mut time_zone) = (req.language, req.time_zone);
    if let Some(old) = &replaced {
        let auth = req.replaces.as_ref().and_then(|(_, auth)| auth.as_deref());
        if !auth.is_some_and(|a| old.subscription.auth().matches(a)) {
            return Err(SubscribeError::OldNotProven);
        }
        user_id = user_id.or_else(|| old.user_id.clone());
        topics = topics.or_else(|| Some(old.topics.clone()));
        // The new subscription is the same reader: it keeps the old one's
        // tags (the post's changes on top), language and time zone.
        if !old.tags.is_empty() {
            let inherited = TagPatch::setting(&old.tags);
            tags = Some(match tags {
                Some(change) => inherited.and_then(&change),
                None => inherited,
            });
        }
        language = language.or_else(|| old.language.as_deref().and_then(|l| Language::new(l).ok()));
        time_zone = time_zone.or_else(|| old.time_zone.as_deref().and_then(|z| TimeZoneName::new(z).ok()));
    }
    let new = NewSubscription {
        subscription: req.subscription,
        user_id,
        topics,
        tags,
        language,
        time_zone,
        vapid_key_id,
        keep_stored_key,
        app: app.id,
    };
    let stored = store.upsert_subscription(&new, now).await?;
    if let Some(old) = replaced {
        store.replace_subscription(app.id, old.id, stored.id, now).await?;
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_store_api::memory::MemoryStore;

    const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";

    fn posted(endpoint: &str, auth: &str) -> Subscribe {
        let json = format!(r#"{{"endpoint":"{endpoint}","keys":{{"p256dh":"{P256DH}","auth":"{auth}"}}}}"#);
        Subscribe {
            subscription: Subscription::from_json(&json).expect("a subscription"),
            user_id: None,
            topics: None,
            named_key: None,
            replaces: None,
            tags: None,
            language: None,
            time_zone: None,
        }
    }

    #[tokio::test]
    async fn a_replacement_needs_the_old_auth_secret_and_inherits_its_user() {
        let store = MemoryStore::new();
        let key = store.make_vapid_key_current(AppId::DEFAULT, "pub", "priv", 1).await.expect("key");
        let app = SubscribingApp { id: AppId::DEFAULT, key_id: key.id, public_key: "pub" };
        let old_auth = "BTBZMqHH6r4Tts7J_aSIgg";
        let old = Subscribe { user_id: Some("alice".into()), ..posted("https://push.example.net/old", old_auth) };
        subscribe(&store, app, old, 1).await.expect("stored");
        let wrong = Subscribe {
            replaces: Some(("https://push.example.net/old".into(), Some(vec![0; 16]))),
            ..posted("https://push.example.net/new", "AAAAAAAAAAAAAAAAAAAAAA")
        };
        assert!(matches!(subscribe(&store, app, wrong, 2).await, Err(SubscribeError::OldNotProven)));
        let proof = tocsin_protocol::b64::decode(old_auth).expect("base64");
        let right = Subscribe {
            replaces: Some(("https://push.example.net/old".into(), Some(proof))),
            ..posted("https://push.example.net/new", "AAAAAAAAAAAAAAAAAAAAAA")
        };
        let new = subscribe(&store, app, right, 3).await.expect("replaced");
        assert_eq!(new.user_id.as_deref(), Some("alice"), "the old one's user");
        assert!(store
            .subscription_by_endpoint(AppId::DEFAULT, "https://push.example.net/old")
            .await
            .expect("store")
            .is_none());
        let named = Subscribe { named_key: Some("pub-9".into()), ..posted("https://push.example.net/x", old_auth) };
        assert!(matches!(subscribe(&store, app, named, 4).await, Err(SubscribeError::UnknownKey)));
        let taken = posted("https://push.example.net/new", old_auth);
        assert!(matches!(subscribe(&store, app, taken, 5).await, Err(SubscribeError::NotProven)));
    }

    #[tokio::test]
    async fn a_replacement_keeps_the_old_ones_tags_language_and_time_zone() {
        let store = MemoryStore::new();
        let key = store.make_vapid_key_current(AppId::DEFAULT, "pub", "priv", 1).await.expect("key");
        let app = SubscribingApp { id: AppId::DEFAULT, key_id: key.id, public_key: "pub" };
        let old_auth = "BTBZMqHH6r4Tts7J_aSIgg";
        let patch = |v| TagPatch::from_json(&v).expect("tags");
        let old = Subscribe {
            tags: Some(patch(serde_json::json!({"plan": "pro", "city": "Lyon"}))),
            language: Some(Language::new("fr-FR").expect("language")),
            time_zone: Some(TimeZoneName::new("Europe/Paris").expect("zone")),
            ..posted("https://push.example.net/old", old_auth)
        };
        subscribe(&store, app, old, 1).await.expect("stored");
        let proof = tocsin_protocol::b64::decode(old_auth).expect("base64");
        let new = Subscribe {
            replaces: Some(("https://push.example.net/old".into(), Some(proof))),
            tags: Some(patch(serde_json::json!({"city": null, "vip": true}))),
            ..posted("https://push.example.net/new", "AAAAAAAAAAAAAAAAAAAAAA")
        };
        let new = subscribe(&store, app, new, 2).await.expect("replaced");
        assert_eq!(new.tags.to_json(), serde_json::json!({"plan": "pro", "vip": true}), "inherited, then changed");
        assert_eq!(new.language.as_deref(), Some("fr-FR"));
        assert_eq!(new.time_zone.as_deref(), Some("Europe/Paris"));
    }
}
