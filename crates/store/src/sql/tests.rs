//! The store's claims, checkpoints and pages, on both backends.

use crate::testutil::{new, on_both_backends, TestResult, AUTH};
use crate::*;

fn claim(node: &str, token: &str) -> Claim {
    Claim { node: node.into(), token: token.into() }
}

type Broadcast = (Target, Shard, Vec<i64>);

/// A started broadcast to `n` fresh subscriptions, one shard, claimed by node `a`.
async fn claimed_broadcast(
    store: &SqlStore,
    key: i64,
    n: usize,
) -> std::result::Result<Broadcast, Box<dyn std::error::Error>> {
    let subs: Vec<NewSubscription> = (0..n)
        .map(|i| new(&format!("https://push.example.net/s/{i}"), None, None, key))
        .collect::<std::result::Result<_, _>>()?;
    let ids = store.upsert_subscriptions(&subs, 1).await?.into_iter().map(|s| s.id).collect();
    let target = Target::All(true);
    let message = message_in(crate::AppId::DEFAULT, "m1", target.clone(), None);
    store.insert_message(&message).await?;
    assert!(store.start_message("m1", &target, 1000, 2).await?);
    let shard = store.claim_shard(&claim("a", "t-a"), 3, 60_000).await?.ok_or("no shard to claim")?;
    Ok((target, shard, ids))
}

#[tokio::test]
async fn pages_come_in_id_order_and_end_empty() -> TestResult {
    on_both_backends(async |store, key| {
        let (target, shard, ids) = claimed_broadcast(store, key, 7).await?;
        let first = readable(
            store.page_subscriptions(crate::AppId::DEFAULT, &target, shard.cursor, Some(shard.end_at), 4).await?,
        );
        assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), ids[..4]);
        assert_eq!(first[0].subscription.endpoint().as_str(), "https://push.example.net/s/0");
        assert_eq!(first[0].vapid_key_id, key);
        let second =
            readable(store.page_subscriptions(crate::AppId::DEFAULT, &target, ids[3], Some(shard.end_at), 4).await?);
        assert_eq!(second.iter().map(|s| s.id).collect::<Vec<_>>(), ids[4..]);
        let none = store.page_subscriptions(crate::AppId::DEFAULT, &target, ids[6], Some(shard.end_at), 4).await?;
        assert!(none.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_checkpoint_counts_only_while_the_lease_is_held() -> TestResult {
    on_both_backends(async |store, key| {
        let (_, shard, ids) = claimed_broadcast(store, key, 4).await?;
        let counts = async || -> std::result::Result<Counts, Box<dyn std::error::Error>> {
            Ok(store.message("m1").await?.ok_or("message m1 is missing")?.counts)
        };
        let delivered = PageOutcome { delivered: 2, ..PageOutcome::default() };
        let progress = ShardProgress { from: shard.cursor, cursor: ids[1], done: false, lease_ms: 60_000 };
        // A checkpoint under another claim's token: refused, nothing counted.
        let other = Shard { token: "t-b".into(), ..shard.clone() };
        assert_eq!(store.checkpoint_shard(&other, &progress, &delivered, 4).await?, None);
        assert_eq!(counts().await?.delivered, 0);
        // The owner's, everything delivered (one statement on PostgreSQL).
        let state = store.checkpoint_shard(&shard, &progress, &delivered, 4).await?;
        assert_eq!(state, Some(MessageState::Sending));
        // The owner's, with a failure, a gone subscription and a retry (a transaction).
        let mut mixed = PageOutcome { gone: vec![ids[2]], ..PageOutcome::default() };
        let failure = |n: usize| FailedDelivery {
            subscription_id: ids[n],
            endpoint: format!("https://push.example.net/s/{n}"),
            reason: "http-400".into(),
            status: Some(400),
        };
        mixed.fail_with(failure(1), "subscription 2: 400".into());
        mixed.fail_with(failure(0), "not kept: one example per reason and page".into());
        assert_eq!(mixed.failed_total(), 2);
        mixed.failed = vec![("http-400".into(), 1)];
        mixed.retries.push(NewRetry { subscription_id: ids[3], attempt: 1, due_at: 10, reason: "http-503".into() });
        let done = ShardProgress { from: ids[1], cursor: shard.end_at, done: true, lease_ms: 60_000 };
        let state = store.checkpoint_shard(&shard, &done, &mixed, 5).await?;
        assert_eq!(state, Some(MessageState::Sending));
        let c = counts().await?;
        assert_eq!((c.delivered, c.failed, c.gone, c.pending_retry), (2, 1, 1, 1));
        assert!(store.subscription(ids[2]).await?.is_none(), "gone is deleted");
        assert_eq!(
            store.message_failure_examples("m1").await?,
            [("http-400".to_owned(), "subscription 2: 400".to_owned())]
        );
        // The shard is done: nobody can claim it again.
        assert!(store.claim_shard(&claim("b", "t-b"), 6, 60_000).await?.is_none());
        Ok(())
    })
    .await
}

/// A checkpoint written again after its first commit's answer was lost
/// (the connection died with the database, and the engine kept the page's
/// results to write them once it answered) counts once, on both paths of
/// the checkpoint (one statement, and a transaction).
#[tokio::test]
async fn a_checkpoint_written_twice_counts_once() -> TestResult {
    on_both_backends(async |store, key| {
        let (_, shard, ids) = claimed_broadcast(store, key, 4).await?;
        let page = PageOutcome { delivered: 2, ..PageOutcome::default() };
        let first = ShardProgress { from: shard.cursor, cursor: ids[1], done: false, lease_ms: 60_000 };
        assert_eq!(store.checkpoint_shard(&shard, &first, &page, 4).await?, Some(MessageState::Sending));
        assert_eq!(store.checkpoint_shard(&shard, &first, &page, 5).await?, Some(MessageState::Sending));
        let mut mixed = PageOutcome { delivered: 1, ..PageOutcome::default() };
        mixed.fail("http-400".into());
        let rest = ShardProgress { from: ids[1], cursor: shard.end_at, done: true, lease_ms: 60_000 };
        assert_eq!(store.checkpoint_shard(&shard, &rest, &mixed, 6).await?, Some(MessageState::Sending));
        assert_eq!(store.checkpoint_shard(&shard, &rest, &mixed, 7).await?, Some(MessageState::Sending));
        let c = store.message("m1").await?.ok_or("m1")?.counts;
        assert_eq!((c.delivered, c.failed), (3, 1), "each page counted once");
        // Under another claim's token it is still refused.
        let other = Shard { token: "t-b".into(), ..shard.clone() };
        assert_eq!(store.checkpoint_shard(&other, &rest, &mixed, 8).await?, None);
        Ok(())
    })
    .await
}

/// The same node id claims again after its lease ran out (a second worker,
/// or a second process started with the same `--node-id`): the first
/// claim's late checkpoint and heartbeat are refused, the second's count.
#[tokio::test]
async fn a_claim_that_ran_out_records_nothing_once_the_shard_is_claimed_again() -> TestResult {
    on_both_backends(async |store, key| {
        let (_, first, ids) = claimed_broadcast(store, key, 4).await?;
        // Lease of the first claim: 60 s from t=3. Still held at t=1000: renewed.
        assert!(store.renew_shard(&first, 1000, 1000).await?);
        // Not yet run out at t=1500: nobody else can claim.
        assert!(store.claim_shard(&claim("a", "t-a2"), 1500, 60_000).await?.is_none());
        // Run out at t=3000: the same node id claims again, with a new token.
        let second = store.claim_shard(&claim("a", "t-a2"), 3000, 60_000).await?.ok_or("not claimable")?;
        assert_eq!((second.message_id.as_str(), second.shard), (first.message_id.as_str(), first.shard));
        let page = PageOutcome { delivered: 4, ..PageOutcome::default() };
        let done = ShardProgress { from: first.cursor, cursor: ids[3], done: true, lease_ms: 60_000 };
        assert!(!store.renew_shard(&first, 3001, 60_000).await?, "the old claim's heartbeat is refused");
        assert_eq!(store.checkpoint_shard(&first, &done, &page, 3002).await?, None);
        assert_eq!(store.message("m1").await?.ok_or("m1")?.counts.delivered, 0);
        assert_eq!(store.checkpoint_shard(&second, &done, &page, 3003).await?, Some(MessageState::Sending));
        assert_eq!(store.message("m1").await?.ok_or("m1")?.counts.delivered, 4);
        assert!(!store.renew_shard(&second, 3004, 60_000).await?, "a closed shard is not renewed");
        Ok(())
    })
    .await
}

/// A page that schedules retries, their claim, a heartbeat, and recording
/// them: only under the token they were claimed with.
#[tokio::test]
async fn retries_are_recorded_only_under_their_claim() -> TestResult {
    on_both_backends(async |store, key| {
        let (_, shard, ids) = claimed_broadcast(store, key, 2).await?;
        let mut page = PageOutcome::default();
        for &id in &ids {
            page.retries.push(NewRetry { subscription_id: id, attempt: 1, due_at: 10, reason: "http-503".into() });
        }
        let done = ShardProgress { from: shard.cursor, cursor: shard.end_at, done: true, lease_ms: 60_000 };
        store.checkpoint_shard(&shard, &done, &page, 5).await?;
        assert!(store.claim_retries(&claim("a", "r1"), 9, 1000, 10).await?.is_empty(), "not due yet");
        let items = store.claim_retries(&claim("a", "r1"), 10, 1000, 10).await?;
        assert_eq!(items.len(), 2);
        assert!(store.renew_retries("r1", 500, 1000).await?);
        // Ran out at 1500; claimed again by another worker of the same node.
        let again = store.claim_retries(&claim("a", "r2"), 2000, 1000, 10).await?;
        assert_eq!(again.len(), 2);
        let delivered = PageOutcome { delivered: 2, ..PageOutcome::default() };
        assert!(!store.renew_retries("r1", 2001, 1000).await?);
        assert!(!store.record_retries("m1", "r1", &items, &delivered, 2002).await?, "lost claim: refused");
        let c = store.message("m1").await?.ok_or("m1")?.counts;
        assert_eq!((c.delivered, c.pending_retry), (0, 2), "nothing recorded by the lost claim");
        assert!(store.record_retries("m1", "r2", &again, &delivered, 2003).await?);
        let c = store.message("m1").await?.ok_or("m1")?.counts;
        assert_eq!((c.delivered, c.pending_retry), (2, 0));
        assert!(store.try_finish_message("m1", 2004).await?);
        Ok(())
    })
    .await
}

/// Cancelling closes the open shards and drops the waiting retries, so no
/// worker claims any of it again; a page in flight still records what it sent.
#[tokio::test]
async fn cancelling_releases_shards_and_retries() -> TestResult {
    on_both_backends(async |store, key| {
        let (target, shard, ids) = claimed_broadcast(store, key, 3).await?;
        let mut page = PageOutcome { delivered: 1, ..PageOutcome::default() };
        page.retries.push(NewRetry { subscription_id: ids[1], attempt: 1, due_at: 10, reason: "http-429".into() });
        let half = ShardProgress { from: shard.cursor, cursor: ids[1], done: false, lease_ms: 60_000 };
        store.checkpoint_shard(&shard, &half, &page, 5).await?;
        assert_eq!(store.message("m1").await?.ok_or("m1")?.counts.pending_retry, 1);
        let m = store.cancel_message(crate::AppId::DEFAULT, "m1", 6).await?.ok_or("m1")?;
        assert_eq!((m.state, m.counts.pending_retry), (MessageState::Cancelled, 0));
        // The page in flight when it was cancelled: counted, no retry scheduled.
        let mut last = PageOutcome { delivered: 1, ..PageOutcome::default() };
        last.retries.push(NewRetry { subscription_id: ids[2], attempt: 1, due_at: 10, reason: "http-429".into() });
        let rest = ShardProgress { from: ids[1], cursor: ids[2], done: false, lease_ms: 60_000 };
        assert_eq!(store.checkpoint_shard(&shard, &rest, &last, 7).await?, Some(MessageState::Cancelled));
        let c = store.message("m1").await?.ok_or("m1")?.counts;
        assert_eq!((c.delivered, c.pending_retry), (2, 0));
        // Nothing left to claim, even once every lease has run out.
        assert!(store.claim_shard(&claim("b", "t-b"), 10_000_000, 60_000).await?.is_none());
        assert!(store.claim_retries(&claim("b", "r-b"), 10_000_000, 60_000, 10).await?.is_empty());
        assert!(
            store.page_subscriptions(crate::AppId::DEFAULT, &target, 0, None, 10).await?.len() == 3,
            "subscriptions untouched"
        );
        Ok(())
    })
    .await
}

/// The retention purge deletes finished messages before the cut with their
/// shards and failures, keeps the totals, and leaves unfinished ones alone.
#[tokio::test]
async fn purging_keeps_the_totals_and_unfinished_messages() -> TestResult {
    on_both_backends(async |store, key| {
        let (_, shard, ids) = claimed_broadcast(store, key, 3).await?;
        let mut page = PageOutcome { delivered: 1, gone: vec![ids[2]], ..PageOutcome::default() };
        page.fail("http-400".into());
        let done = ShardProgress { from: shard.cursor, cursor: shard.end_at, done: true, lease_ms: 60_000 };
        store.checkpoint_shard(&shard, &done, &page, 5).await?;
        assert!(store.try_finish_message("m1", 6).await?);
        let pending =
            NewMessage { send_at: Some(10_000), ..message_in(crate::AppId::DEFAULT, "m2", Target::All(true), None) };
        store.insert_message(&pending).await?;
        let before = store.stats(crate::AppId::DEFAULT).await?;
        assert_eq!(store.purge_messages(6, 100).await?, 0, "updated at 6: not before the cut");
        assert_eq!(store.purge_messages(7, 100).await?, 1);
        assert!(store.message("m1").await?.is_none());
        assert!(store.message_failures("m1").await?.is_empty(), "its failures went with it");
        assert!(store.message("m2").await?.is_some(), "a scheduled message stays");
        let after = store.stats(crate::AppId::DEFAULT).await?;
        assert_eq!(
            (after.messages, after.delivered, after.failed, after.removed, after.messages_pending),
            (before.messages, before.delivered, before.failed, before.removed, before.messages_pending)
        );
        assert_eq!((after.delivered, after.failed, after.removed), (1, 1, 1));
        assert_eq!(store.purge_messages(i64::MAX, 100).await?, 0, "nothing twice");
        Ok(())
    })
    .await
}

fn message_in(app: AppId, id: &str, target: Target, key: Option<&str>) -> NewMessage {
    NewMessage { ttl: 60, idempotency_key: key.map(str::to_owned), ..NewMessage::new(id, app, target, 1) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_sees_only_its_own_rows() -> TestResult {
    on_both_backends(async |store, key| {
        let shop =
            NewApp { name: "shop".into(), vapid_subject: Some("mailto:a@shop.example".into()), ..NewApp::default() };
        let b = store.create_app(&shop, "pub-b", "priv-b", 1).await?.ok_or("shop not created")?;
        assert!(store.create_app(&shop, "pub-c", "priv-c", 1).await?.is_none(), "a name is taken once");
        let key_b = store.current_vapid_key(b.id).await?.ok_or("shop has no key")?;
        assert_eq!(key_b.subject.as_deref(), Some("mailto:a@shop.example"));
        assert_eq!(store.current_vapid_key(AppId::DEFAULT).await?.map(|k| k.id), Some(key));

        let a1 = store.upsert_subscription(&new("https://push.example.net/a1", Some("u"), None, key)?, 1).await?;
        let mut nb = new("https://push.example.net/b1", Some("u"), Some(&["news"]), key_b.id)?;
        nb.app = b.id;
        let b1 = store.upsert_subscription(&nb, 1).await?;
        assert_eq!(b1.app_id, b.id);
        // The same endpoint in the other app is refused and changes nothing.
        let mut stolen = new("https://push.example.net/a1", Some("thief"), None, key_b.id)?;
        stolen.app = b.id;
        assert!(matches!(store.upsert_subscription(&stolen, 2).await, Err(StoreError::Conflict(_))));
        let a1_now = store.app_subscription(AppId::DEFAULT, a1.id).await?.ok_or("a1 went")?;
        assert_eq!((a1_now.user_id.as_deref(), a1_now.app_id), (Some("u"), AppId::DEFAULT));

        // Ids of the other app are not found; targets stay inside the app.
        assert!(store.app_subscription(b.id, a1.id).await?.is_none());
        assert!(!store.delete_subscription(b.id, a1.id, 7).await?);
        assert!(store.subscription_by_endpoint(b.id, "https://push.example.net/a1").await?.is_none());
        for target in
            [Target::All(true), Target::UserIds(vec!["u".into()]), Target::SubscriptionIds(vec![a1.id, b1.id])]
        {
            assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target).await?, 1, "{target:?}");
            let page = readable(store.page_subscriptions(b.id, &target, 0, None, 10).await?);
            assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), [b1.id], "{target:?}");
        }
        assert_eq!(store.count_subscriptions(AppId::DEFAULT, &Target::Topic("news".into())).await?, 0);

        // Messages: per-app idempotency, lookups, lists, cancels, events, stats.
        let (ma, _) = store.insert_message(&message_in(AppId::DEFAULT, "ma", Target::All(true), Some("k"))).await?;
        let (mb, created) = store.insert_message(&message_in(b.id, "mb", Target::All(true), Some("k"))).await?;
        assert!(created, "the same idempotency key in another app is another message");
        assert_eq!((ma.app_id(), mb.app_id()), (AppId::DEFAULT, b.id));
        assert!(store.app_message(b.id, "ma").await?.is_none());
        assert!(store.cancel_message(b.id, "ma", 2).await?.is_none());
        assert_eq!(store.app_message(AppId::DEFAULT, "ma").await?.map(|m| m.state), Some(MessageState::Queued));
        assert!(!store.record_interaction(b.id, "ma", "s:1", Interaction::Shown, None, 1).await?);
        // Once per delivery: the same recipient again counts nothing, another
        // recipient or the other kind counts.
        for (recipient, kind) in [
            ("s:1", Interaction::Shown),
            ("s:1", Interaction::Shown),
            ("s:2", Interaction::Shown),
            ("s:1", Interaction::Clicked),
        ] {
            assert!(store.record_interaction(AppId::DEFAULT, "ma", recipient, kind, None, 1).await?);
        }
        let counts = store.app_message(AppId::DEFAULT, "ma").await?.ok_or("ma")?.counts;
        assert_eq!((counts.shown, counts.clicked), (2, 1));
        assert_eq!(store.list_messages(b.id, None, 10).await?.iter().map(|m| m.id()).collect::<Vec<_>>(), ["mb"]);
        assert!(store.start_message("mb", &Target::All(true), 100, 2).await?);
        assert_eq!(store.message("mb").await?.map(|m| m.counts.targeted), Some(1), "its audience is its app's");
        assert_eq!(store.stats(b.id).await?.subscriptions, 1);
        assert_eq!(store.stats(AppId::DEFAULT).await?.messages, 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_retire_only_when_unused() -> TestResult {
    on_both_backends(async |store, old| {
        let app = AppId::DEFAULT;
        let s = store.upsert_subscription(&new("https://push.example.net/r1", None, None, old)?, 1).await?;
        let new_key = store.make_vapid_key_current(app, "pub-2", "priv-2", 2).await?;
        assert_eq!(store.current_vapid_key(app).await?.map(|k| k.id), Some(new_key.id));
        assert_eq!(store.vapid_key_id(app, "pub-2").await?, Some(new_key.id));
        assert_eq!(store.vapid_key_id(app, "pub-9").await?, None);
        assert_eq!(store.vapid_key_id(AppId(99), "pub-2").await?, None, "another app's key is not found");
        let keys = store.vapid_keys(app).await?;
        assert_eq!(
            keys.iter().map(|k| (k.id, k.current, k.subscriptions)).collect::<Vec<_>>(),
            [(old, false, 1), (new_key.id, true, 0)]
        );
        assert_eq!(store.retire_vapid_key(app, new_key.id, true, 7).await?, RetireKey::Current);
        assert_eq!(store.retire_vapid_key(app, old, false, 7).await?, RetireKey::InUse(1));
        assert_eq!(store.retire_vapid_key(AppId(99), old, true, 7).await?, RetireKey::NotFound);
        // Posted again without naming its key: the same subscription keeps
        // the key it has; with other keys it is refused (only the holder of
        // its auth secret may post it again), and nothing changes.
        let mut again = new("https://push.example.net/r1", None, None, new_key.id)?;
        again.keep_stored_key = true;
        assert_eq!(store.upsert_subscription(&again, 3).await?.vapid_key_id, old);
        let other_keys = r#"{"endpoint":"https://push.example.net/r3","keys":{"p256dh":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4","auth":"AAAAAAAAAAAAAAAAAAAAAA"}}"#;
        let mut r3 = new("https://push.example.net/r3", None, None, old)?;
        store.upsert_subscription(&r3, 3).await?;
        r3.subscription = tocsin_protocol::Subscription::from_json(other_keys)?;
        (r3.vapid_key_id, r3.keep_stored_key) = (new_key.id, true);
        assert!(matches!(store.upsert_subscription(&r3, 3).await, Err(StoreError::NotProven)));
        r3.keep_stored_key = false;
        assert!(matches!(store.upsert_subscription(&r3, 4).await, Err(StoreError::NotProven)));
        let kept = store.subscription_by_endpoint(app, "https://push.example.net/r3").await?.ok_or("r3")?;
        assert_eq!((kept.vapid_key_id, kept.updated_at), (old, 3), "nothing changed");
        assert_ne!(kept.subscription.auth(), r3.subscription.auth());
        // Deleting by endpoint needs the stored auth secret.
        let other_auth = tocsin_protocol::b64::encode(r3.subscription.auth().as_bytes());
        let kept_auth = tocsin_protocol::b64::encode(kept.subscription.auth().as_bytes());
        assert!(!store.delete_subscription_by_endpoint(app, "https://push.example.net/r3", &other_auth, 7).await?);
        assert!(!store.delete_subscription_by_endpoint(app, "https://push.example.net/r3", "!!", 7).await?);
        assert!(store.delete_subscription_by_endpoint(app, "https://push.example.net/r3", &kept_auth, 7).await?);
        // The subscription moves to the new key; then the old one may go.
        let mut moved = new("https://push.example.net/r1", None, None, new_key.id)?;
        moved.subscription = s.subscription.clone();
        store.upsert_subscription(&moved, 3).await?;
        assert_eq!(store.retire_vapid_key(app, old, false, 7).await?, RetireKey::Retired { removed: 0 });
        assert!(store.vapid_key(old).await?.is_none());
        // An imported key is stored beside the current one, not instead.
        let imported = store.add_vapid_key(app, "pub-3", "priv-3", 4).await?;
        assert_eq!(store.current_vapid_key(app).await?.map(|k| k.id), Some(new_key.id));
        assert_eq!(store.add_vapid_key(app, "pub-3", "priv-3", 5).await?.id, imported.id, "found again by public key");
        let other =
            store.create_app(&NewApp { name: "other".into(), ..NewApp::default() }, "pub-o", "priv-o", 1).await?;
        let other = other.ok_or("other not created")?;
        assert!(matches!(store.add_vapid_key(other.id, "pub-3", "priv-3", 6).await, Err(StoreError::Conflict(_))));
        // Forced: the subscriptions on it go with it.
        let mut on_imported = new("https://push.example.net/r2", None, None, imported.id)?;
        on_imported.app = app;
        store.upsert_subscription(&on_imported, 6).await?;
        assert_eq!(store.retire_vapid_key(app, imported.id, true, 7).await?, RetireKey::Retired { removed: 1 });
        assert!(store.subscription_by_endpoint(app, "https://push.example.net/r2").await?.is_none());
        Ok(())
    })
    .await
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_stats_count_what_came_and_went() -> TestResult {
    on_both_backends(async |store, key| {
        let app = AppId::DEFAULT;
        const DAY: i64 = DAY_MS;
        let day = 20_000; // a day long past: what is created on it is dated by the caller
        let at = day * DAY + 5;
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(
                store
                    .upsert_subscription(&new(&format!("https://push.example.net/d{i}"), None, None, key)?, at)
                    .await?
                    .id,
            );
        }
        store.insert_message(&NewMessage { created_at: at, ..message_in(app, "md", Target::All(true), None) }).await?;
        // Removed five days later: one by the API, one by its browser.
        let later = (day + 5) * DAY + 9;
        assert!(store.delete_subscription(app, ids[0], later).await?);
        assert!(store.delete_subscription_by_endpoint(app, "https://push.example.net/d1", AUTH, later).await?);
        // Replaced by its browser's next subscription: neither removed nor new.
        let next =
            store.upsert_subscription(&new("https://push.example.net/d2-next", None, None, key)?, at + 3 * DAY).await?;
        assert!(store.replace_subscription(app, ids[2], next.id, 5).await?);
        assert_eq!(store.app_subscription(app, next.id).await?.map(|s| s.created_at), Some(at));
        let then = store.daily_stats(app, day, day + 3).await?;
        assert_eq!(then.len(), 4);
        assert_eq!((then[0].day, then[0].subscribed, then[0].sent), (day, 4, 1), "{then:?}");
        assert!(then[1..].iter().all(|d| d.subscribed == 0 && d.unsubscribed == 0), "{then:?}");
        let recent = store.daily_stats(app, day + 4, day + 5).await?;
        assert_eq!(recent.iter().map(|d| d.unsubscribed).sum::<i64>(), 2, "{recent:?}");
        assert_eq!(recent[1].unsubscribed, 2, "on the day they went: {recent:?}");
        assert!(store.daily_stats(AppId(2), day, day).await?[0] == DailyStats { day, ..DailyStats::default() });
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_counted_by_endpoint_host() -> TestResult {
    on_both_backends(async |store, key| {
        for e in [
            "https://fcm.googleapis.com/fcm/send/a",
            "https://fcm.googleapis.com/fcm/send/b",
            "https://web.push.apple.com/QGx",
            "https://updates.push.services.mozilla.com/wpush/v2/x",
            "http://127.0.0.1:8080/push/1",
            "https://push.example.net",
        ] {
            store.upsert_subscription(&new(e, None, None, key)?, 1).await?;
        }
        let hosts = store.count_by_host(AppId::DEFAULT).await?;
        let expected: Vec<(String, i64)> = [
            ("127.0.0.1:8080", 1),
            ("fcm.googleapis.com", 2),
            ("push.example.net", 1),
            ("updates.push.services.mozilla.com", 1),
            ("web.push.apple.com", 1),
        ]
        .into_iter()
        .map(|(h, n)| (h.to_owned(), n))
        .collect();
        assert_eq!(hosts, expected);
        assert!(store.count_by_host(AppId(2)).await?.is_empty());
        Ok(())
    })
    .await
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

/// The subscriptions of a page, every row of which must be readable.
fn readable(page: Vec<crate::PageRow>) -> Vec<crate::StoredSubscription> {
    page.into_iter().map(|r| r.readable().expect("a readable row")).collect()
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
    let page = store.page_subscriptions(AppId::DEFAULT, &Target::All(true), 0, None, 10).await?;
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
