//! The storage contract: what every [`Store`] does, proven the same way on
//! the in-memory store (which the engine's paused-clock tests trust), on
//! SQLite and on PostgreSQL (`testutil::on_every_store`). A behaviour that
//! differs between them fails here.
//!
//! Tests of one backend's own concerns (migrations from older releases,
//! the outbox, which the in-memory store does not keep) are in
//! `sql/tests.rs`.

mod ab;
mod audience;
mod rules;

use crate::testutil::{new, on_every_store, TestResult, AUTH};
use crate::*;

fn claim(node: &str, token: &str) -> Claim {
    Claim { node: node.into(), token: token.into() }
}

type Broadcast = (Target, Shard, Vec<i64>);

/// A started broadcast to `n` fresh subscriptions, one shard, claimed by node `a`.
async fn claimed_broadcast(
    store: &dyn Store,
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
    on_every_store(async |store, key| {
        let (target, shard, ids) = claimed_broadcast(store, key, 7).await?;
        let first = readable(
            store.page_subscriptions(crate::AppId::DEFAULT, &target, None, shard.cursor, Some(shard.end_at), 4).await?,
        );
        assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), ids[..4]);
        assert_eq!(first[0].subscription.endpoint().as_str(), "https://push.example.net/s/0");
        assert_eq!(first[0].vapid_key_id, key);
        let second = readable(
            store.page_subscriptions(crate::AppId::DEFAULT, &target, None, ids[3], Some(shard.end_at), 4).await?,
        );
        assert_eq!(second.iter().map(|s| s.id).collect::<Vec<_>>(), ids[4..]);
        let none =
            store.page_subscriptions(crate::AppId::DEFAULT, &target, None, ids[6], Some(shard.end_at), 4).await?;
        assert!(none.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_checkpoint_counts_only_while_the_lease_is_held() -> TestResult {
    on_every_store(async |store, key| {
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
    on_every_store(async |store, key| {
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
    on_every_store(async |store, key| {
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
    on_every_store(async |store, key| {
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
    on_every_store(async |store, key| {
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
            store.page_subscriptions(crate::AppId::DEFAULT, &target, None, 0, None, 10).await?.len() == 3,
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
    on_every_store(async |store, key| {
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

pub(crate) fn message_in(app: AppId, id: &str, target: Target, key: Option<&str>) -> NewMessage {
    NewMessage { ttl: 60, idempotency_key: key.map(str::to_owned), ..NewMessage::new(id, app, target, 1) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_sees_only_its_own_rows() -> TestResult {
    on_every_store(async |store, key| {
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
            let page = readable(store.page_subscriptions(b.id, &target, None, 0, None, 10).await?);
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
    on_every_store(async |store, old| {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_stats_count_what_came_and_went() -> TestResult {
    on_every_store(async |store, key| {
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
    on_every_store(async |store, key| {
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

/// The subscriptions of a page, every row of which must be readable.
pub(crate) fn readable(page: Vec<crate::PageRow>) -> Vec<crate::StoredSubscription> {
    page.into_iter().map(|r| r.readable().expect("a readable row")).collect()
}

/// Tokens are kept by hash, found by it, touched, listed and revoked by
/// name; a server secret is made once, and every later caller reads it.
#[tokio::test]
async fn tokens_and_server_secrets() -> TestResult {
    on_every_store(async |store, _key| {
        store.insert_token("ops", "h1", TokenScope::Admin, None, 10).await?;
        let shop = store.create_app(&NewApp { name: "shop".into(), ..NewApp::default() }, "p", "k", 1).await?;
        let shop = shop.ok_or("shop not created")?.id;
        let unknown = store.insert_token("lost", "h0", TokenScope::Send, Some(AppId(shop.0 + 100)), 11).await;
        assert!(matches!(unknown, Err(StoreError::Conflict(_))), "a token of no app: {unknown:?}");
        store.insert_token("shop-sender", "h2", TokenScope::Send, Some(shop), 11).await?;
        let t = store.token("h2").await?.ok_or("h2")?;
        assert_eq!(
            (t.name.as_str(), t.scope, t.app, t.last_used_at),
            ("shop-sender", TokenScope::Send, Some(shop), None)
        );
        assert!(store.token("h3").await?.is_none());
        store.touch_token("h1", 20).await?;
        assert_eq!(store.token("h1").await?.and_then(|t| t.last_used_at), Some(20));
        assert_eq!(store.tokens().await?.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["ops", "shop-sender"]);
        assert_eq!(store.revoke_token("ops").await?, 1);
        assert_eq!(store.revoke_token("ops").await?, 0, "revoked once");
        assert!(store.token("h1").await?.is_none());

        assert_eq!(store.server_secret("event-token-key", "first").await?, "first");
        assert_eq!(store.server_secret("event-token-key", "second").await?, "first", "the first one stays");
        assert_eq!(store.server_secret("other", "x").await?, "x");
        Ok(())
    })
    .await
}

/// A browser's new subscription replaces its old one: the new row keeps
/// the old one's creation time, the old one goes without counting as an
/// unsubscription; deletions by id count.
#[tokio::test]
async fn a_replaced_subscription_keeps_its_history() -> TestResult {
    on_every_store(async |store, key| {
        let app = AppId::DEFAULT;
        let old = store.upsert_subscription(&new("https://push.example.net/old", Some("u"), None, key)?, 100).await?;
        let newer = store.upsert_subscription(&new("https://push.example.net/new", Some("u"), None, key)?, 200).await?;
        assert!(!store.replace_subscription(AppId(99), old.id, newer.id, 300).await?, "not in another app");
        assert!(store.replace_subscription(app, old.id, newer.id, 300).await?);
        assert!(store.app_subscription(app, old.id).await?.is_none());
        let kept = store.app_subscription(app, newer.id).await?.ok_or("new went")?;
        assert_eq!(kept.created_at, 100, "the new one keeps the old one's creation time");
        assert!(!store.replace_subscription(app, old.id, newer.id, 301).await?, "once");
        let unsubscribed = async || -> std::result::Result<i64, Box<dyn std::error::Error>> {
            Ok(store.daily_stats(app, 0, 0).await?.iter().map(|d| d.unsubscribed).sum())
        };
        assert_eq!(unsubscribed().await?, 0, "a replacement is not an unsubscription");
        assert!(store.delete_subscription(app, newer.id, 400).await?);
        assert!(!store.delete_subscription(app, newer.id, 401).await?);
        assert_eq!(unsubscribed().await?, 1);
        assert_eq!(store.count_subscriptions(app, &Target::All(true)).await?, 0);
        Ok(())
    })
    .await
}

/// The next message to start is the oldest queued one, or a scheduled one
/// once it is due; a message starts once, and is done when its shards
/// are closed.
#[tokio::test]
async fn messages_start_once_in_order_and_when_due() -> TestResult {
    on_every_store(async |store, key| {
        let app = AppId::DEFAULT;
        store.upsert_subscription(&new("https://push.example.net/1", None, None, key)?, 1).await?;
        let later = NewMessage { send_at: Some(5_000), ..NewMessage::new("later", app, Target::All(true), 10) };
        let (m, created) = store.insert_message(&later).await?;
        assert_eq!((m.state, created), (MessageState::Scheduled, true));
        store.insert_message(&NewMessage::new("first", app, Target::All(true), 20)).await?;
        store.insert_message(&NewMessage::new("second", app, Target::All(true), 30)).await?;
        assert_eq!(store.next_startable_message(100).await?.map(|m| m.accepted.id), Some("first".into()));
        assert!(store.start_message("first", &Target::All(true), 100, 100).await?);
        assert!(!store.start_message("first", &Target::All(true), 100, 101).await?, "a message starts once");
        assert_eq!(store.next_startable_message(100).await?.map(|m| m.accepted.id), Some("second".into()));
        assert!(store.start_message("second", &Target::All(true), 100, 102).await?);
        assert!(store.next_startable_message(4_999).await?.is_none(), "not due yet");
        assert_eq!(store.next_startable_message(5_000).await?.map(|m| m.accepted.id), Some("later".into()));
        assert_eq!(store.sending_message_ids().await?.len(), 2);
        let m = store.message("first").await?.ok_or("first")?;
        assert_eq!((m.state, m.counts.targeted), (MessageState::Sending, 1));
        assert!(!store.try_finish_message("first", 103).await?, "its shard is open");
        let shard = store.claim_shard(&claim("a", "t"), 104, 60_000).await?.ok_or("no shard")?;
        let done = ShardProgress { from: shard.cursor, cursor: shard.end_at, done: true, lease_ms: 60_000 };
        let page = PageOutcome { delivered: 1, ..PageOutcome::default() };
        store.checkpoint_shard(&shard, &done, &page, 105).await?;
        assert!(store.try_finish_message(&shard.message_id, 106).await?);
        assert_eq!(store.message(&shard.message_id).await?.map(|m| m.state), Some(MessageState::Done));
        Ok(())
    })
    .await
}
