//! The store's claims, checkpoints and pages, on both backends.

use crate::testutil::{new, on_both_backends, TestResult};
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
    let message = NewMessage {
        id: "m1".into(),
        payload: None,
        target: target.clone(),
        ttl: 60,
        urgency: None,
        topic: None,
        send_at: None,
        idempotency_key: None,
        created_at: 1,
    };
    store.insert_message(&message).await?;
    assert!(store.start_message("m1", &target, 1000, 2).await?);
    let shard = store.claim_shard(&claim("a", "t-a"), 3, 60_000).await?.ok_or("no shard to claim")?;
    Ok((target, shard, ids))
}

#[tokio::test]
async fn pages_come_in_id_order_and_end_empty() -> TestResult {
    on_both_backends(async |store, key| {
        let (target, shard, ids) = claimed_broadcast(store, key, 7).await?;
        let first = store.page_subscriptions(&target, shard.cursor, Some(shard.end_at), 4).await?;
        assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), ids[..4]);
        assert_eq!(first[0].subscription.endpoint().as_str(), "https://push.example.net/s/0");
        assert_eq!(first[0].vapid_key_id, key);
        let second = store.page_subscriptions(&target, ids[3], Some(shard.end_at), 4).await?;
        assert_eq!(second.iter().map(|s| s.id).collect::<Vec<_>>(), ids[4..]);
        let none = store.page_subscriptions(&target, ids[6], Some(shard.end_at), 4).await?;
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
        let progress = ShardProgress { cursor: ids[1], done: false, lease_ms: 60_000 };
        // A checkpoint under another claim's token: refused, nothing counted.
        let other = Shard { token: "t-b".into(), ..shard.clone() };
        assert_eq!(store.checkpoint_shard(&other, &progress, &delivered, 4).await?, None);
        assert_eq!(counts().await?.delivered, 0);
        // The owner's, everything delivered (one statement on PostgreSQL).
        let state = store.checkpoint_shard(&shard, &progress, &delivered, 4).await?;
        assert_eq!(state, Some(MessageState::Sending));
        // The owner's, with a failure, a gone subscription and a retry (a transaction).
        let mut mixed = PageOutcome { gone: vec![ids[2]], ..PageOutcome::default() };
        mixed.fail("http-400".into());
        mixed.retries.push(NewRetry { subscription_id: ids[3], attempt: 1, due_at: 10, reason: "http-503".into() });
        let done = ShardProgress { cursor: shard.end_at, done: true, lease_ms: 60_000 };
        let state = store.checkpoint_shard(&shard, &done, &mixed, 5).await?;
        assert_eq!(state, Some(MessageState::Sending));
        let c = counts().await?;
        assert_eq!((c.delivered, c.failed, c.gone, c.pending_retry), (2, 1, 1, 1));
        assert!(store.subscription(ids[2]).await?.is_none(), "gone is deleted");
        // The shard is done: nobody can claim it again.
        assert!(store.claim_shard(&claim("b", "t-b"), 6, 60_000).await?.is_none());
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
        let done = ShardProgress { cursor: ids[3], done: true, lease_ms: 60_000 };
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
        let done = ShardProgress { cursor: shard.end_at, done: true, lease_ms: 60_000 };
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
        let half = ShardProgress { cursor: ids[1], done: false, lease_ms: 60_000 };
        store.checkpoint_shard(&shard, &half, &page, 5).await?;
        assert_eq!(store.message("m1").await?.ok_or("m1")?.counts.pending_retry, 1);
        let m = store.cancel_message("m1", 6).await?.ok_or("m1")?;
        assert_eq!((m.state, m.counts.pending_retry), (MessageState::Cancelled, 0));
        // The page in flight when it was cancelled: counted, no retry scheduled.
        let mut last = PageOutcome { delivered: 1, ..PageOutcome::default() };
        last.retries.push(NewRetry { subscription_id: ids[2], attempt: 1, due_at: 10, reason: "http-429".into() });
        let rest = ShardProgress { cursor: ids[2], done: false, lease_ms: 60_000 };
        assert_eq!(store.checkpoint_shard(&shard, &rest, &last, 7).await?, Some(MessageState::Cancelled));
        let c = store.message("m1").await?.ok_or("m1")?.counts;
        assert_eq!((c.delivered, c.pending_retry), (2, 0));
        // Nothing left to claim, even once every lease has run out.
        assert!(store.claim_shard(&claim("b", "t-b"), 10_000_000, 60_000).await?.is_none());
        assert!(store.claim_retries(&claim("b", "r-b"), 10_000_000, 60_000, 10).await?.is_empty());
        assert!(store.page_subscriptions(&target, 0, None, 10).await?.len() == 3, "subscriptions untouched");
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
        let done = ShardProgress { cursor: shard.end_at, done: true, lease_ms: 60_000 };
        store.checkpoint_shard(&shard, &done, &page, 5).await?;
        assert!(store.try_finish_message("m1", 6).await?);
        let pending = NewMessage {
            id: "m2".into(),
            payload: None,
            target: Target::All(true),
            ttl: 60,
            urgency: None,
            topic: None,
            send_at: Some(10_000),
            idempotency_key: None,
            created_at: 1,
        };
        store.insert_message(&pending).await?;
        let before = store.stats().await?;
        assert_eq!(store.purge_messages(6, 100).await?, 0, "updated at 6: not before the cut");
        assert_eq!(store.purge_messages(7, 100).await?, 1);
        assert!(store.message("m1").await?.is_none());
        assert!(store.message_failures("m1").await?.is_empty(), "its failures went with it");
        assert!(store.message("m2").await?.is_some(), "a scheduled message stays");
        let after = store.stats().await?;
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
