//! A/B tests in the engine, on tokio's paused clock against the in-memory
//! store, over two nodes: the variants go to an even split of the sample,
//! synthetic clicks make one win (or none, significantly) at
//! `decideAfter`, and the winner goes to the rest: every subscription gets
//! one notification, counts exact.

use std::sync::Arc;
use std::time::Duration;

use tocsin_audience::rules::ab::{AbMetric, AbSettings, IfNoWinner, SampleSlice, SlicePart};
use tocsin_audience::rules::Window;
use tocsin_delivery::engine::{Clock, EngineConfig, EngineMetrics};
use tocsin_store_api::memory::MemoryStore;
use tocsin_store_api::{
    AbPayload, AbPayloads, AbTest, AppId, AppStore, Interaction, MessageRules, MessageState, MessageStore, NewMessage,
    Target,
};
use tokio::sync::watch;

mod support;
use support::*;

const N: usize = 400;
const BASE: i64 = 1_796_400_000_000; // 2026-12-04T12:00:00Z

/// The store with `N` subscriptions; their ids.
async fn store_of_n() -> Result<(Arc<MemoryStore>, Vec<i64>), Box<dyn std::error::Error>> {
    let store = Arc::new(MemoryStore::new());
    let vapid = tocsin_protocol::VapidKey::generate()?;
    let key = store
        .make_vapid_key_current(AppId::DEFAULT, &vapid.public_key_base64url(), &vapid.private_key_base64url(), 0)
        .await?;
    let receiver = tocsin_protocol::ece::ReceiverKeys::generate()?;
    let endpoints: Vec<String> = (0..N).map(|i| format!("https://fcm.googleapis.com/fcm/send/ab-{i}")).collect();
    let ids = subscribe_all(store.as_ref(), key.id, &endpoints, &receiver).await?;
    Ok((store, ids))
}

/// A test of two variants over half the audience, decided after an hour
/// by clicks; its message as the server stores it.
fn test_message(if_no_winner: IfNoWinner) -> NewMessage {
    let settings = AbSettings {
        sample_percent: 50,
        decide_after: Window::parse("1h").expect("a window"),
        metric: AbMetric::Clicked,
        if_no_winner,
    };
    let test = AbTest {
        settings,
        seed: 424_242,
        variants: vec!["t-a".into(), "t-b".into()],
        winners: vec!["t-rest-a".into(), "t-rest-b".into()],
        decide_at: None,
        decision: None,
    };
    let p = |text: &str| AbPayload::new(Some(text.as_bytes()), None, false);
    let payloads = AbPayloads { variants: vec![p("A"), p("B")], winners: vec![p("A!"), p("B!")] };
    NewMessage {
        payload: Some(payloads.to_stored()),
        send_at: Some(BASE),
        ttl: 86_400,
        rules: MessageRules { ab: Some(test), ..MessageRules::default() },
        ..NewMessage::new("t", AppId::DEFAULT, Target::All(true), BASE)
    }
}

fn slice(part: SlicePart) -> SampleSlice {
    SampleSlice { seed: 424_242, percent: 50, part }
}

/// Runs a test with two nodes; the clicks of each variant's deliveries
/// are made by `clicks` (the share of its subscribers that click, per
/// mille) once the variants are sent. Returns the test's message and how
/// many notifications each endpoint got.
async fn run_test(
    if_no_winner: IfNoWinner,
    clicks: [u32; 2],
) -> Result<(tocsin_store_api::Message, Arc<MemoryStore>, Vec<u32>), Box<dyn std::error::Error>> {
    let (store, ids) = store_of_n().await?;
    store.insert_message(&test_message(if_no_winner)).await?;
    let (a, b) =
        (Scripted::new(Duration::from_millis(10), delivered), Scripted::new(Duration::from_millis(10), delivered));
    let (stop, stopped) = watch::channel(false);
    let node = |id: &str, service: Arc<Scripted>| -> Result<_, Box<dyn std::error::Error>> {
        let config = EngineConfig {
            node_id: id.into(),
            poll_interval: Duration::from_millis(250),
            clock: Clock::tokio_at(BASE),
            ..config()?
        };
        Ok(engine_with(store.clone(), service, config, EngineMetrics::new()))
    };
    let run_a = tokio::spawn(node("node-a", a.clone())?.run(stopped.clone()));
    let run_b = tokio::spawn(node("node-b", b.clone())?.run(stopped));
    for (i, id) in ["t-a", "t-b"].into_iter().enumerate() {
        while store.message(id).await?.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        until_done(store.as_ref(), id, Duration::from_secs(60)).await?;
        // Synthetic clicks: the first `clicks[i]` per mille of the variant's subscribers.
        let members: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|&s| slice(SlicePart::Variant { index: i as u8, count: 2 }).contains(s))
            .collect();
        let clicking = members.len() * clicks[i] as usize / 1000;
        for s in &members[..clicking] {
            assert!(
                store.record_interaction(AppId::DEFAULT, id, &format!("s:{s}"), Interaction::Clicked, None, 0).await?
            );
        }
    }
    let parent = store.message("t").await?.ok_or("the test")?;
    assert_eq!(parent.state, MessageState::Scheduled, "waiting for its decision");
    let decide_at = parent.accepted.rules.ab.as_ref().and_then(|t| t.decide_at).ok_or("decideAt")?;
    assert!((BASE + 3_600_000..BASE + 3_601_000).contains(&decide_at), "an hour after the variants start");
    // An hour on, the decision; then the winner's message, if any.
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    let parent = until_done(store.as_ref(), "t", Duration::from_secs(60)).await?;
    for id in ["t-rest-a", "t-rest-b"] {
        if store.message(id).await?.is_some() {
            until_done(store.as_ref(), id, Duration::from_secs(60)).await?;
        }
    }
    stop.send(true)?;
    run_a.await?;
    run_b.await?;
    let (ha, hb) = (a.hits(), b.hits());
    let hits = (0..N)
        .map(|i| {
            let e = format!("https://fcm.googleapis.com/fcm/send/ab-{i}");
            ha.get(&e).copied().unwrap_or(0) + hb.get(&e).copied().unwrap_or(0)
        })
        .collect();
    Ok((parent, store, hits))
}

#[tokio::test(start_paused = true)]
async fn clicks_make_a_variant_win_and_it_goes_to_the_rest() -> TestResult {
    // B's subscribers click five times as often as A's.
    let (parent, store, hits) = run_test(IfNoWinner::Stop, [60, 300]).await?;
    let test = parent.accepted.rules.ab.ok_or("ab")?;
    let d = test.decision.clone().ok_or("a decision")?;
    assert_eq!((d.best, d.winner, d.sent), (Some(1), Some(1), Some(1)), "{d:?}");
    assert!(d.p_value.is_some_and(|p| p < 0.05), "{d:?}");
    assert_eq!(test.stage(), "decided");
    let (va, vb) = (store.message("t-a").await?.ok_or("a")?, store.message("t-b").await?.ok_or("b")?);
    let rest = store.message("t-rest-b").await?.ok_or("the winner's message")?;
    assert!(store.message("t-rest-a").await?.is_none(), "only the winner's");
    assert_eq!(rest.accepted.payload.as_deref(), Some(&b"B!"[..]));
    // The split: about a quarter each, the rest half; each subscriber once.
    let (na, nb, nr) = (va.counts.delivered, vb.counts.delivered, rest.counts.delivered);
    eprintln!(
        "split of {N}: A {na}, B {nb}, rest {nr}; clicks {} and {}; {}",
        va.counts.clicked, vb.counts.clicked, d.reason
    );
    assert_eq!(na + nb + nr, N as i64);
    assert_eq!((va.counts.targeted, vb.counts.targeted, rest.counts.targeted), (na, nb, nr));
    for n in [na, nb] {
        assert!((70..=130).contains(&n), "a variant's share of 200: {n}");
    }
    assert!(hits.iter().all(|h| *h == 1), "every subscription got one notification");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn without_a_significant_difference_the_test_stops_or_sends_the_best() -> TestResult {
    // 20 % against 22 %: not significant on about 100 each.
    let (parent, store, hits) = run_test(IfNoWinner::Stop, [200, 220]).await?;
    let test = parent.accepted.rules.ab.ok_or("ab")?;
    let d = test.decision.clone().ok_or("a decision")?;
    assert_eq!((d.winner, d.sent), (None, None), "{d:?}");
    assert!(d.p_value.is_some_and(|p| p >= 0.05), "{d:?}");
    assert_eq!(test.stage(), "stopped");
    assert!(store.message("t-rest-a").await?.is_none() && store.message("t-rest-b").await?.is_none());
    let sampled = hits.iter().filter(|h| **h == 1).count();
    assert!(hits.iter().all(|h| *h <= 1));
    assert!((150..=250).contains(&sampled), "only the sample got one: {sampled}");

    let (parent, store, hits) = run_test(IfNoWinner::SendBest, [200, 220]).await?;
    let d = parent.accepted.rules.ab.and_then(|t| t.decision).ok_or("a decision")?;
    assert_eq!((d.winner, d.best, d.sent), (None, Some(1), Some(1)), "{d:?}");
    assert!(d.reason.contains("send-best"), "{}", d.reason);
    assert!(store.message("t-rest-b").await?.is_some_and(|m| m.state == MessageState::Done));
    assert!(hits.iter().all(|h| *h == 1), "the best went to the rest");
    Ok(())
}
