//! What only the SQL stores do, on both backends: migrating a database of
//! an older release, and the outbox. The contract every store keeps is in
//! `contract/`.

use crate::contract::{message_in, readable};
use crate::testutil::{new, on_both_backends, TestResult};
use crate::*;
use sqlx::Row;
use tocsin_audience::{Language, TagKey, TagPatch, TimeZoneName};

/// A database as the release before apps left it (migrations 0001–0006)
/// with a key, a subscription, a message with an idempotency key, a token
/// and purged totals; then opened by this release.
async fn migrates_into_default(url: &str, old: &sqlx::migrate::Migrator) -> TestResult {
    let pool = sqlx::AnyPool::connect(url).await?;
    let before_apps = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(old.migrations.iter().filter(|m| m.version < 7).cloned().collect()),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before_apps.run(&pool).await?;
    for sql in [
        "INSERT INTO vapid_keys (public_key, private_key, is_current, created_at) VALUES ('pub', 'priv', 1, 1)",
        "INSERT INTO subscriptions (endpoint, p256dh, auth, topics, vapid_key_id, created_at, updated_at) \
         VALUES ('https://push.example.net/old', 'BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4', \
         'BTBZMqHH6r4Tts7J_aSIgg', '[]', 1, 1, 1)",
        "INSERT INTO messages (id, target, ttl, state, idempotency_key, created_at, updated_at, delivered) \
         VALUES ('m-old', '{\"all\":true}', 60, 'done', 'key-1', 1, 1, 1)",
        "INSERT INTO admin_tokens (name, token_hash, created_at) VALUES ('ops', 'hash', 1)",
        "UPDATE purged_totals SET messages = 5, delivered = 7 WHERE id = 1",
    ] {
        sqlx::query(sql).execute(&pool).await?;
    }
    pool.close().await;

    let store = SqlStore::connect(url).await?;
    let apps = store.apps().await?;
    assert_eq!(apps.iter().map(|a| (a.id, a.name.as_str())).collect::<Vec<_>>(), [(AppId::DEFAULT, "default")]);
    assert_eq!(store.current_vapid_key(AppId::DEFAULT).await?.map(|k| k.public_key), Some("pub".into()));
    let sub = store.subscription_by_endpoint(AppId::DEFAULT, "https://push.example.net/old").await?;
    assert_eq!(sub.map(|s| s.app_id), Some(AppId::DEFAULT));
    let (m, created) =
        store.insert_message(&message_in(AppId::DEFAULT, "m-new", Target::All(true), Some("key-1"))).await?;
    assert_eq!((m.id(), created), ("m-old", false), "the idempotency key still finds its message");
    assert_eq!(store.token("hash").await?.map(|t| t.app), Some(None), "an old token works for every app");
    let stats = store.stats(AppId::DEFAULT).await?;
    assert_eq!((stats.subscriptions, stats.messages, stats.delivered), (1, 6, 8), "purged totals are default's");
    // New apps get ids after default.
    let shop = store.create_app(&NewApp { name: "shop".into(), ..NewApp::default() }, "p2", "k2", 2).await?;
    assert_eq!(shop.map(|a| a.id), Some(AppId(2)));
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_apps_migrates_into_default() -> TestResult {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}/old.db?mode=rwc", dir.path().display());
    migrates_into_default(&sqlite, &super::SQLITE_MIGRATIONS).await.map_err(|e| format!("on SQLite: {e}"))?;
    let name = format!("tocsin_migrate_{}", std::process::id());
    let admin = sqlx::AnyPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let outcome =
        migrates_into_default(&url, &super::POSTGRES_MIGRATIONS).await.map_err(|e| format!("on PostgreSQL: {e}"));
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&admin).await?;
    Ok(outcome?)
}

/// The outbox: events are written with what caused them and queued for the
/// webhooks that want them; a delivery is claimed under a lease, fixed on
/// its first claim (the same id and body on every retry), and recorded only
/// by the claim's token.
#[tokio::test]
async fn outbox_deliveries_are_claimed_fixed_and_recorded_by_their_token() -> TestResult {
    on_both_backends(async |store, _key| {
        let hook = |id: &str, app: AppId, events: Vec<EventType>| NewWebhook {
            id: id.into(),
            app,
            url: "https://hooks.example.net/h".into(),
            events,
            description: None,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            created_at: 1,
        };
        store.create_webhook(&hook("wh_a", AppId::DEFAULT, vec![EventType::MessageCreated])).await?;
        store.create_webhook(&hook("wh_b", AppId::DEFAULT, vec![EventType::MessageDone])).await?;
        let (shop, _) = store
            .create_app(&NewApp { name: "shop".into(), ..NewApp::default() }, "pk", "sk", 1)
            .await?
            .map(|a| (a.id, ()))
            .ok_or("app")?;
        store.create_webhook(&hook("wh_shop", shop, vec![EventType::MessageCreated])).await?;
        store.insert_message(&message_in(AppId::DEFAULT, "m-1", Target::All(true), None)).await?;
        let pending =
            |list: Vec<WebhookRow>| list.into_iter().map(|w| (w.registered.id, w.pending)).collect::<Vec<_>>();
        assert_eq!(pending(store.webhooks(AppId::DEFAULT).await?), [("wh_a".into(), 1), ("wh_b".into(), 0)]);
        assert_eq!(pending(store.webhooks(shop).await?), [("wh_shop".into(), 0)], "another app's event");

        let d = store.claim_delivery("a", "t1", 100, 30_000, 10).await?.ok_or("a delivery")?;
        assert_eq!(d.webhook.registered.id, "wh_a");
        let body: serde_json::Value = serde_json::from_str(&d.body)?;
        assert_eq!((body["type"].as_str(), body["data"]["messageId"].as_str()), (Some("message.created"), Some("m-1")));
        assert!(store.claim_delivery("b", "t2", 101, 30_000, 10).await?.is_none(), "its lease holds");
        let retry = DeliveryResult::Retry { next_at: 5_000, error: "HTTP 503".into() };
        assert!(!store.finish_delivery("wh_a", "t2", &retry, 102).await?, "another token records nothing");
        assert!(store.finish_delivery("wh_a", "t1", &retry, 102).await?);
        assert!(store.claim_delivery("b", "t3", 4_000, 30_000, 10).await?.is_none(), "not due yet");
        let again = store.claim_delivery("b", "t3", 5_000, 30_000, 10).await?.ok_or("the retry")?;
        assert_eq!((again.id.as_str(), again.body.as_str(), again.attempts), (d.id.as_str(), d.body.as_str(), 1));
        assert_eq!(again.first_attempt_at, Some(102));
        assert!(store.finish_delivery("wh_a", "t3", &DeliveryResult::Delivered, 5_001).await?);
        assert_eq!(pending(store.webhooks(AppId::DEFAULT).await?), [("wh_a".into(), 0), ("wh_b".into(), 0)]);
        assert!(store.claim_delivery("c", "t4", 6_000, 30_000, 10).await?.is_none(), "nothing left");

        // Giving up drops the delivery and marks the webhook failing.
        store.insert_message(&message_in(AppId::DEFAULT, "m-2", Target::All(true), None)).await?;
        let d = store.claim_delivery("a", "t5", 7_000, 30_000, 10).await?.ok_or("m-2's delivery")?;
        assert!(
            store.finish_delivery("wh_a", "t5", &DeliveryResult::GaveUp { error: "HTTP 500".into() }, 7_001).await?
        );
        let w = store.webhooks(AppId::DEFAULT).await?.remove(0);
        assert_eq!((w.failing_since, w.last_error.as_deref(), w.pending), (Some(7_001), Some("HTTP 500"), 0));
        assert_ne!(d.id, again.id);
        assert_eq!(store.webhook_totals().await?, (1, 0));

        // The stream's reading, and the purge.
        let events = store.events_after(AppId::DEFAULT, 0, i64::MAX, 10).await?;
        let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventType::MessageCreated, EventType::MessageCreated]);
        assert_eq!(store.last_event_id(AppId::DEFAULT).await?, events[1].id);
        assert!(store.events_after(AppId::DEFAULT, events[1].id, i64::MAX, 10).await?.is_empty());
        assert!(store.delete_webhook(AppId::DEFAULT, "wh_b").await?);
        assert!(!store.delete_webhook(shop, "wh_a").await?, "not another app's");
        assert_eq!(store.purge_events(i64::MAX).await?, 2);
        Ok(())
    })
    .await
}

/// A database as release 69e12ad could leave it (migrations 0001–0011):
/// an `expirationTime` of 2^63 stored as a negative number, one past the
/// year 9999, a `sendAt` past it; opened by this release, they are
/// repaired (migration 0012) and every row reads.
async fn repairs_out_of_range_values(url: &str, old: &sqlx::migrate::Migrator) -> TestResult {
    let pool = sqlx::AnyPool::connect(url).await?;
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(old.migrations.iter().filter(|m| m.version < 12).cloned().collect()),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before.run(&pool).await?;
    sqlx::query("INSERT INTO vapid_keys (public_key, private_key, is_current, created_at, app_id) VALUES ('pub', 'priv', 1, 1, 1)")
        .execute(&pool)
        .await?;
    let p256dh = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    for (i, expiration) in [(1, "-9223372036854775808"), (2, "253402300800000"), (3, "253402300799999")] {
        sqlx::query(&format!(
            "INSERT INTO subscriptions (endpoint, p256dh, auth, expiration_time, topics, vapid_key_id, created_at, updated_at, app_id) \
             SELECT 'https://push.example.net/e{i}', '{p256dh}', 'BTBZMqHH6r4Tts7J_aSIgg', {expiration}, '[]', id, 1, 1, 1 \
             FROM vapid_keys LIMIT 1"
        ))
        .execute(&pool)
        .await?;
    }
    sqlx::query(
        "INSERT INTO messages (id, target, ttl, state, send_at, created_at, updated_at, app_id) \
         VALUES ('m-far', '{\"all\":true}', 60, 'scheduled', 9223372036854775807, 1, 1, 1)",
    )
    .execute(&pool)
    .await?;
    pool.close().await;

    let store = SqlStore::connect(url).await?;
    let page = store.page_subscriptions(AppId::DEFAULT, &Target::All(true), None, 0, None, 10).await?;
    let expirations: Vec<Option<u64>> = readable(page).iter().map(|s| s.subscription.expiration_time()).collect();
    assert_eq!(expirations, [None, None, Some(253_402_300_799_999)]);
    let m = store.app_message(AppId::DEFAULT, "m-far").await?.ok_or("m-far")?;
    assert_eq!(m.accepted.send_at, Some(253_402_300_799_999));
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_values_of_an_older_release_are_repaired() -> TestResult {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}/old.db?mode=rwc", dir.path().display());
    repairs_out_of_range_values(&sqlite, &super::SQLITE_MIGRATIONS).await.map_err(|e| format!("on SQLite: {e}"))?;
    let name = format!("tocsin_repair_{}", std::process::id());
    let admin = sqlx::AnyPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let outcome =
        repairs_out_of_range_values(&url, &super::POSTGRES_MIGRATIONS).await.map_err(|e| format!("on PostgreSQL: {e}"));
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&admin).await?;
    Ok(outcome?)
}

/// Every event the SQL stores write is the one definition's (`Event`):
/// read back, each `data` parses as its type's payload, and the one the
/// database writes itself (the `subscription.created` trigger of each
/// backend) equals what `Event::SubscriptionCreated` serializes for the
/// stored row.
#[tokio::test]
async fn every_event_written_is_of_the_event_enum() -> TestResult {
    on_both_backends(async |store, key| {
        let mut tagged = new("https://push.example.net/e1", Some("u1"), Some(&["news"]), key)?;
        tagged.tags = Some(TagPatch::from_json(&serde_json::json!({"plan": "pro", "n": 3, "vip": true}))?);
        tagged.language = Some(Language::new("pt-BR")?);
        tagged.time_zone = Some(TimeZoneName::new("America/Sao_Paulo")?);
        let sub = store.upsert_subscription(&tagged, 2).await?;
        let plain = store.upsert_subscription(&new("https://push.example.net/e2", None, None, key)?, 2).await?;
        // Posted again with a change of tags: `subscription.updated`.
        tagged.tags = Some(TagPatch::from_json(&serde_json::json!({"vip": null}))?);
        let changed = store.upsert_subscription(&tagged, 3).await?;
        assert_eq!(changed.tags.to_json(), serde_json::json!({"plan": "pro", "n": 3}));
        store.insert_message(&message_in(AppId::DEFAULT, "m-e", Target::All(true), None)).await?;
        store.record_interaction(AppId::DEFAULT, "m-e", "s:1", Interaction::Clicked, Some("open"), 3).await?;
        store.cancel_message(AppId::DEFAULT, "m-e", 4).await?;
        store.delete_subscription(AppId::DEFAULT, plain.id, 5).await?;
        let events = store.events_after(AppId::DEFAULT, 0, i64::MAX, 100).await?;
        let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventType::SubscriptionCreated,
                EventType::SubscriptionCreated,
                EventType::SubscriptionUpdated,
                EventType::MessageCreated,
                EventType::NotificationClicked,
                EventType::MessageCancelled,
                EventType::SubscriptionRemoved,
            ]
        );
        for e in &events {
            let parsed =
                Event::parse(e.kind, &e.data).ok_or_else(|| format!("{:?} is not its payload: {}", e.kind, e.data))?;
            assert_eq!(parsed.data(), e.data, "serialized as the enum does");
        }
        let expected = |s: &StoredSubscription| {
            Event::SubscriptionCreated(event::SubscriptionCreated {
                subscription_id: s.id,
                endpoint: s.subscription.endpoint().to_string(),
                user_id: s.user_id.clone(),
                topics: s.topics.clone(),
                tags: (!s.tags.is_empty()).then(|| s.tags.clone()),
                language: s.language.clone(),
                time_zone: s.time_zone.clone(),
            })
            .data()
        };
        assert_eq!(events[0].data, expected(&sub), "the trigger writes the enum's JSON");
        assert_eq!(events[1].data, expected(&plain));
        let updated = Event::SubscriptionUpdated(event::SubscriptionUpdated::attributes_of(&changed)).data();
        assert_eq!(events[2].data, updated);
        Ok(())
    })
    .await
}

/// `--indexed-tags`: SQLite reads a segment's equality through the tag's
/// index, in counts and in a page's range of ids (the index ends with the
/// rowid), and the answer is the scan's.
#[tokio::test]
async fn an_indexed_tag_is_read_through_its_index() -> TestResult {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir()?;
    let store = SqlStore::connect(&format!("sqlite://{}/t.db", dir.path().display())).await?;
    let key = store.make_vapid_key_current(AppId::DEFAULT, "pub", "priv", 1).await?;
    for i in 0..30 {
        let mut n = new(&format!("https://push.example.net/i/{i}"), None, None, key.id)?;
        n.tags = Some(TagPatch::from_json(&serde_json::json!({"bucket": i % 3, "zip:1": format!("z{}", i % 2)}))?);
        store.upsert_subscription(&n, 1).await?;
    }
    let target = |text: &str| -> std::result::Result<Target, Box<dyn std::error::Error>> {
        Ok(Target::Where(crate::Condition::parse(text)?))
    };
    let before = store.count_subscriptions(AppId::DEFAULT, &target("bucket == 1 && zip:1 == \"z0\"")?).await?;
    store.index_tags(&[TagKey::new("bucket")?, TagKey::new("zip:1")?]).await?;
    store.index_tags(&[TagKey::new("bucket")?]).await?;
    assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target("bucket == 1 && zip:1 == \"z0\"")?).await?, before);
    assert_eq!(before, 5);
    let mut binds = vec![super::target::Bind::Int(1)];
    let expr = crate::Condition::parse("bucket == 1")?;
    let cond = super::condition::condition_sql(expr.expr(), Backend::Sqlite, 0, &mut binds);
    let sql = format!("EXPLAIN QUERY PLAN SELECT s.id FROM subscriptions s WHERE s.app_id = $1 AND {cond} AND s.id > 3 AND s.id <= 20 ORDER BY s.id LIMIT 5");
    let q = super::target::bind_all(sqlx::query(&sql), &binds);
    let plan: Vec<String> = q
        .fetch_all(&store.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("detail"))
        .collect::<std::result::Result<_, _>>()?;
    assert!(plan.iter().any(|p| p.contains("subscriptions_tag_bucket") && p.contains("rowid>")), "{plan:?}");
    store.close().await;
    Ok(())
}

/// `--indexed-tags` on PostgreSQL: equality on a tag is the jsonb
/// comparison its index is on, so the planner can seek it (seq scans
/// forbidden to show that it may), and counts are the scan's.
#[tokio::test]
async fn postgres_can_read_an_indexed_tag_through_its_index() -> TestResult {
    crate::testutil::on_both_backends(async |store, key| {
        if store.backend() != Backend::Postgres {
            return Ok(());
        }
        for i in 0..30 {
            let mut n = new(&format!("https://push.example.net/p/{i}"), None, None, key)?;
            n.tags = Some(TagPatch::from_json(&serde_json::json!({"bucket": i % 3, "name": format!("n{}", i % 2)}))?);
            store.upsert_subscription(&n, 1).await?;
        }
        let target = |text: &str| -> std::result::Result<Target, Box<dyn std::error::Error>> {
            Ok(Target::Where(crate::Condition::parse(text)?))
        };
        let before = store.count_subscriptions(AppId::DEFAULT, &target("bucket == 1 && name == \"n0\"")?).await?;
        store.index_tags(&[TagKey::new("bucket")?]).await?;
        store.index_tags(&[TagKey::new("bucket")?]).await?;
        assert_eq!(before, 5);
        assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target("bucket == 1 && name == \"n0\"")?).await?, before);
        assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target("bucket == 1.0")?).await?, 10, "3 and 3.0 alike");
        assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target("bucket == \"1\"")?).await?, 0, "not a string");
        let mut binds = vec![super::target::Bind::Int(1)];
        let expr = crate::Condition::parse("bucket == 1")?;
        let cond = super::condition::condition_sql(expr.expr(), Backend::Postgres, 0, &mut binds);
        let sql = format!(
            "EXPLAIN SELECT s.id FROM subscriptions s WHERE s.app_id = $1 AND {cond} AND s.id > 3 AND s.id <= 20 ORDER BY s.id LIMIT 5"
        );
        let mut conn = store.pool.acquire().await?;
        sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await?;
        let q = super::target::bind_all(sqlx::query(&sql), &binds);
        let plan: Vec<String> = q
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()?;
        sqlx::query("RESET enable_seqscan").execute(&mut *conn).await?;
        assert!(plan.iter().any(|p| p.contains("subscriptions_tag_bucket")), "{plan:?}");
        Ok(())
    })
    .await
}
