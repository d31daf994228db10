//! Property test: whatever subscription the protocol crate accepts (any
//! `expirationTime` from 0 to the year 9999, any topics and user id), the
//! store keeps it and reads it back the same, on SQLite.

use proptest::prelude::*;
use tocsin_protocol::subscription::MAX_EXPIRATION_MS;
use tocsin_protocol::Subscription;
use tocsin_store::AppStore;
use tocsin_store::SubscriptionStore;
use tocsin_store::{AppId, NewSubscription, PageRow, SqlStore, Target};

const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn what_the_protocol_accepts_the_store_reads_back(
        expiration in prop_oneof![
            Just(None),
            Just(Some(0u64)),
            Just(Some(MAX_EXPIRATION_MS)),
            (0..=MAX_EXPIRATION_MS).prop_map(Some)
        ],
        auth in prop::array::uniform16(any::<u8>()),
        path in prop::collection::vec(prop::sample::select(b"abcXYZ019_-".to_vec()), 1..200),
        topics in prop::collection::vec(any::<String>(), 0..4),
        user in prop::option::of(any::<String>()),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(fail)?;
        runtime.block_on(async {
            let dir = tempfile::tempdir().map_err(fail)?;
            let store = SqlStore::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.map_err(fail)?;
            let key = store.make_vapid_key_current(AppId::DEFAULT, "pub", "priv", 0).await.map_err(fail)?;
            let json = serde_json::json!({
                "endpoint": format!("https://push.example.net/{}", String::from_utf8_lossy(&path)),
                "expirationTime": expiration,
                "keys": {"p256dh": P256DH, "auth": tocsin_protocol::b64::encode(auth)},
            });
            let subscription = Subscription::from_value(json).map_err(fail)?;
            let new = NewSubscription {
                subscription: subscription.clone(),
                user_id: user.clone(),
                topics: Some(topics.clone()),
                tags: None,
                language: None,
                time_zone: None,
                vapid_key_id: key.id,
                keep_stored_key: false,
                app: AppId::DEFAULT,
            };
            store.upsert_subscription(&new, 1).await.map_err(fail)?;
            let page = store.page_subscriptions(AppId::DEFAULT, &Target::All(true), None, 0, None, 10).await.map_err(fail)?;
            prop_assert_eq!(page.len(), 1);
            let Some(PageRow::Sub(back)) = page.into_iter().next() else { return Err(fail("unreadable")) };
            prop_assert_eq!(back.subscription, subscription);
            prop_assert_eq!(back.user_id, user);
            let mut want = topics.clone();
            want.sort();
            want.dedup();
            let mut got = back.topics.clone();
            got.sort();
            prop_assert_eq!(got, want);
            store.close().await;
            Ok(())
        })?;
    }
}
