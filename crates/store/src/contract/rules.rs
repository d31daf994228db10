//! The storage contract of delivery rules: an app's rules kept and
//! replaced; a message at a local time started as shards per wave (only
//! for waves someone of its audience is in), each claimable from its
//! wave's instant and paging its zones only; held deliveries counted
//! `held` until taken again; capped ones counted with their reason; send
//! histories written in the checkpoint.

use crate::testutil::{new, on_every_store, TestResult};
use crate::tocsin_audience::rules::{DeliveryRules, LocalDateTime, LocalSchedule};
use crate::tocsin_audience::TimeZoneName;
use crate::*;

use super::{claim, message_in, readable};

const HOUR: i64 = 3_600_000;

#[tokio::test]
async fn an_app_keeps_its_rules() -> TestResult {
    on_every_store(async |store, _key| {
        assert_eq!(store.app_rules(AppId::DEFAULT).await?, DeliveryRules::default());
        let rules = DeliveryRules::from_json(serde_json::json!({
            "defaultTimeZone": "Europe/Paris",
            "quietHours": {"start": "22:00", "end": "07:00"},
            "frequencyCaps": [{"max": 3, "per": "1d"}, {"max": 1, "per": "1h", "tag": "promo"}]
        }))?;
        assert!(store.set_app_rules(AppId::DEFAULT, &rules).await?);
        assert_eq!(store.app_rules(AppId::DEFAULT).await?, rules);
        assert_eq!(store.app(DEFAULT_APP).await?.ok_or("app")?.rules, rules);
        assert!(!store.set_app_rules(AppId(999), &rules).await?, "no such app");
        assert_eq!(store.app_rules(AppId(999)).await?, DeliveryRules::default());
        assert!(store.set_app_rules(AppId::DEFAULT, &DeliveryRules::default()).await?);
        assert_eq!(store.app_rules(AppId::DEFAULT).await?, DeliveryRules::default());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_local_time_starts_as_waves_claimed_from_their_instant() -> TestResult {
    on_every_store(async |store, key| {
        let zones = [Some("Pacific/Kiritimati"), Some("Europe/Berlin"), None, Some("Europe/Paris")];
        let mut subs = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            let mut s = new(&format!("https://push.example.net/z/{i}"), None, None, key)?;
            s.time_zone = zone.map(TimeZoneName::new).transpose()?;
            subs.push(s);
        }
        let ids: Vec<i64> = store.upsert_subscriptions(&subs, 1).await?.into_iter().map(|s| s.id).collect();
        // 2026-12-24T09:00 local; planned at 2026-12-24T08:30Z: Kiritimati
        // (19:00Z the day before) and Berlin and Paris (08:00Z) have passed
        // and are skipped; UTC (the subscriber without a zone) comes at 09:00Z.
        let now = 1_798_101_000_000; // 2026-12-24T08:30:00Z
        let plan = LocalSchedule::plan(&LocalDateTime::parse("2026-12-24T09:00")?, &TimeZoneName::utc(), true, now)?;
        let utc_at = plan.first_at().ok_or("a wave")?;
        let target = Target::All(true);
        let message = NewMessage {
            send_at: Some(utc_at),
            rules: MessageRules { local: Some(plan.clone()), ..MessageRules::default() },
            ..message_in(AppId::DEFAULT, "local", target.clone(), None)
        };
        store.insert_message(&message).await?;
        let stored = store.message("local").await?.ok_or("message")?;
        assert_eq!(stored.accepted.rules, message.rules, "the plan is kept as accepted");
        assert!(store.start_message("local", &target, 1000, now).await?);
        let m = store.message("local").await?.ok_or("message")?;
        assert_eq!(m.counts.targeted, 1, "skipped zones are not its audience");
        assert!(store.claim_shard(&claim("a", "t1"), utc_at - 1, 60_000).await?.is_none(), "not before its wave");
        let shard = store.claim_shard(&claim("a", "t1"), utc_at, 60_000).await?.ok_or("the UTC wave")?;
        let zones = shard.zones.clone().ok_or("a wave's shard names its zones")?;
        assert!(zones.unset && zones.matches(Some("UTC")) && !zones.matches(Some("Europe/Berlin")));
        let page = readable(
            store
                .page_subscriptions(AppId::DEFAULT, &target, Some(&zones), shard.cursor, Some(shard.end_at), 10)
                .await?,
        );
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), [ids[2]], "its zones only");
        assert!(store.claim_shard(&claim("a", "t2"), utc_at + 1000, 60_000).await?.is_none(), "one wave has someone");
        let waves = store.wave_progress("local").await?;
        assert_eq!(waves.len(), 1);
        assert_eq!((waves[0].shards, waves[0].done), (1, 0));
        let progress = ShardProgress { from: shard.cursor, cursor: shard.end_at, done: true, lease_ms: 60_000 };
        let outcome = PageOutcome { delivered: 1, ..PageOutcome::default() };
        store.checkpoint_shard(&shard, &progress, &outcome, utc_at + 1).await?.ok_or("checkpoint")?;
        let waves = store.wave_progress("local").await?;
        assert_eq!((waves[0].shards, waves[0].done, waves[0].delivered), (1, 1, 1));
        assert!(store.try_finish_message("local", utc_at + 2).await?);

        // Without skipping: every wave with someone in it, passed ones at once.
        let plan = LocalSchedule::plan(&LocalDateTime::parse("2026-12-24T09:00")?, &TimeZoneName::utc(), false, now)?;
        let message = NewMessage {
            send_at: plan.first_at(),
            rules: MessageRules { local: Some(plan), ..MessageRules::default() },
            ..message_in(AppId::DEFAULT, "all-waves", target.clone(), None)
        };
        store.insert_message(&message).await?;
        assert!(store.start_message("all-waves", &target, 1000, now).await?);
        assert_eq!(store.message("all-waves").await?.ok_or("message")?.counts.targeted, 4);
        let mut at_once = Vec::new();
        while let Some(s) = store.claim_shard(&claim("a", &format!("n{}", at_once.len())), now, 60_000).await? {
            at_once.push(s);
        }
        assert_eq!(at_once.len(), 2, "Kiritimati's wave and Berlin's and Paris' (one wave) have passed: {at_once:?}");
        assert_eq!(store.wave_progress("all-waves").await?.len(), 3);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn held_capped_and_histories_are_kept_with_the_checkpoint() -> TestResult {
    on_every_store(async |store, key| {
        let subs: Vec<NewSubscription> = (0..3)
            .map(|i| new(&format!("https://push.example.net/h/{i}"), None, None, key))
            .collect::<std::result::Result<_, _>>()?;
        let ids: Vec<i64> = store.upsert_subscriptions(&subs, 1).await?.into_iter().map(|s| s.id).collect();
        let target = Target::All(true);
        store.insert_message(&message_in(AppId::DEFAULT, "m", target.clone(), None)).await?;
        assert!(store.start_message("m", &target, 1000, 2).await?);
        let shard = store.claim_shard(&claim("a", "t"), 3, 60_000).await?.ok_or("shard")?;
        let mut outcome = PageOutcome { delivered: 1, ..PageOutcome::default() };
        outcome.held.push(NewRetry {
            subscription_id: ids[0],
            attempt: 0,
            due_at: 10 * HOUR,
            reason: HELD_REASON.into(),
        });
        outcome.cap("subscription 2: over the cap of 3 per 1d".into());
        outcome.histories.push((ids[2], r#"[[3]]"#.into()));
        let progress = ShardProgress { from: shard.cursor, cursor: shard.end_at, done: true, lease_ms: 60_000 };
        store.checkpoint_shard(&shard, &progress, &outcome, 4).await?.ok_or("checkpoint")?;
        let m = store.message("m").await?.ok_or("message")?;
        assert_eq!((m.counts.delivered, m.counts.held, m.counts.capped, m.counts.pending_retry), (1, 1, 1, 0));
        assert_eq!(store.message_failures("m").await?, vec![(CAPPED_REASON.to_owned(), 1)]);
        assert_eq!(store.message_failure_examples("m").await?[0].0, CAPPED_REASON);
        let sub = store.subscription(ids[2]).await?.ok_or("subscription")?;
        assert_eq!(sub.send_history.as_deref(), Some("[[3]]"));
        let paged = readable(store.page_subscriptions(AppId::DEFAULT, &target, None, 0, None, 10).await?);
        assert_eq!(paged[2].send_history.as_deref(), Some("[[3]]"), "pages carry the history");
        assert!(!store.try_finish_message("m", 5).await?, "not done while one is held");
        assert!(store.claim_retries(&claim("a", "r0"), 10 * HOUR - 1, 60_000, 10).await?.is_empty());
        let items = store.claim_retries(&claim("a", "r1"), 10 * HOUR, 60_000, 10).await?;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].reason, HELD_REASON);
        let taken = PageOutcome { delivered: 1, ..PageOutcome::default() };
        assert!(store.record_retries("m", "r1", &items, &taken, 10 * HOUR).await?);
        let m = store.message("m").await?.ok_or("message")?;
        assert_eq!((m.counts.delivered, m.counts.held, m.counts.pending_retry), (2, 0, 0));
        assert!(store.try_finish_message("m", 10 * HOUR + 1).await?);
        let done = store.message("m").await?.ok_or("message")?;
        assert_eq!(done.state, MessageState::Done);

        // A cancel drops what is held.
        store.insert_message(&message_in(AppId::DEFAULT, "c", target.clone(), None)).await?;
        assert!(store.start_message("c", &target, 1000, 2).await?);
        let shard = store.claim_shard(&claim("a", "tc"), 3, 60_000).await?.ok_or("shard")?;
        let mut outcome = PageOutcome::default();
        outcome.held.push(NewRetry { subscription_id: ids[1], attempt: 0, due_at: HOUR, reason: HELD_REASON.into() });
        let progress = ShardProgress { from: shard.cursor, cursor: shard.end_at, done: true, lease_ms: 60_000 };
        store.checkpoint_shard(&shard, &progress, &outcome, 4).await?.ok_or("checkpoint")?;
        assert_eq!(store.message("c").await?.ok_or("message")?.counts.held, 1);
        let c = store.cancel_message(AppId::DEFAULT, "c", 5).await?.ok_or("message")?;
        assert_eq!((c.state, c.counts.held), (MessageState::Cancelled, 0));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn throttle_slots_are_reserved_in_order_and_a_shard_deferred_under_its_claim() -> TestResult {
    on_every_store(async |store, key| {
        let subs: Vec<NewSubscription> = (0..2)
            .map(|i| new(&format!("https://push.example.net/t/{i}"), None, None, key))
            .collect::<std::result::Result<_, _>>()?;
        store.upsert_subscriptions(&subs, 1).await?;
        let target = Target::All(true);
        let rules = MessageRules { rate_per_minute: 60, ..MessageRules::default() };
        store.insert_message(&NewMessage { rules, ..message_in(AppId::DEFAULT, "t", target.clone(), None) }).await?;
        assert_eq!(store.throttle_next("t").await?, 0);
        // Two nodes reserving: one after the other, never overlapping.
        assert_eq!(store.reserve_sends("t", 10_000, 1_000).await?, 1_000);
        assert_eq!(store.reserve_sends("t", 5_000, 1_500).await?, 11_000);
        assert_eq!(store.throttle_next("t").await?, 16_000);
        assert_eq!(store.reserve_sends("t", 1_000, 50_000).await?, 50_000, "not before now");
        assert!(store.start_message("t", &target, 1000, 60_000).await?);
        let shard = store.claim_shard(&claim("a", "held"), 60_000, 60_000).await?.ok_or("shard")?;
        let other = Shard { token: "other".into(), ..shard.clone() };
        assert!(!store.defer_shard(&other, 90_000).await?, "not under another claim");
        assert!(store.defer_shard(&shard, 90_000).await?);
        assert!(store.claim_shard(&claim("b", "early"), 89_999, 60_000).await?.is_none(), "deferred");
        let again = store.claim_shard(&claim("b", "late"), 90_000, 60_000).await?.ok_or("claimable again")?;
        assert_eq!(again.shard, shard.shard);
        assert!(!store.defer_shard(&shard, 95_000).await?, "the first claim is lost");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn retries_are_given_back_under_their_claim_only() -> TestResult {
    on_every_store(async |store, key| {
        let sub = new("https://push.example.net/r/0", None, None, key)?;
        let id = store.upsert_subscriptions(&[sub], 1).await?[0].id;
        let target = Target::All(true);
        store.insert_message(&message_in(AppId::DEFAULT, "r", target.clone(), None)).await?;
        assert!(store.start_message("r", &target, 1000, 2).await?);
        let shard = store.claim_shard(&claim("a", "s"), 3, 60_000).await?.ok_or("shard")?;
        let mut outcome = PageOutcome::default();
        outcome.retries.push(NewRetry { subscription_id: id, attempt: 1, due_at: 10, reason: "http-503".into() });
        let progress = ShardProgress { from: shard.cursor, cursor: shard.end_at, done: true, lease_ms: 60_000 };
        store.checkpoint_shard(&shard, &progress, &outcome, 4).await?.ok_or("checkpoint")?;
        let items = store.claim_retries(&claim("a", "r1"), 10, 60_000, 10).await?;
        assert_eq!(items.len(), 1);
        assert!(!store.defer_retries("r", "other", 5_000).await?, "not under another claim");
        assert!(!store.defer_retries("other-message", "r1", 5_000).await?, "nor another message's");
        assert!(store.defer_retries("r", "r1", 5_000).await?);
        assert!(store.claim_retries(&claim("b", "r2"), 4_999, 60_000, 10).await?.is_empty(), "due again at 5,000");
        let again = store.claim_retries(&claim("b", "r3"), 5_000, 60_000, 10).await?;
        assert_eq!((again.len(), again[0].attempt), (1, 1), "the attempt count is kept");
        assert!(!store.renew_retries("r1", 5_001, 60_000).await?, "the first claim is gone");
        assert_eq!(store.message("r").await?.ok_or("message")?.counts.pending_retry, 1);
        Ok(())
    })
    .await
}
