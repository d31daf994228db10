//! Delivery rules in the engine, on tokio's paused clock against the
//! in-memory store: a message at a local time reaches each zone at its
//! hour (UTC+14 first, UTC−11 last), quiet hours hold deliveries until
//! the window ends in the subscriber's zone, and frequency caps drop what
//! is over them, with exact counts.

use std::sync::Arc;
use std::time::Duration;

use tocsin_audience::rules::{DeliveryRules, LocalDateTime, LocalSchedule};
use tocsin_audience::TimeZoneName;
use tocsin_delivery::engine::{Clock, Engine, EngineConfig, EngineMetrics};
use tocsin_protocol::ece::ReceiverKeys;
use tocsin_protocol::VapidKey;
use tocsin_store_api::memory::MemoryStore;
use tocsin_store_api::{
    AppId, AppStore, MessageRules, MessageState, MessageStore, NewMessage, NewSubscription, Store, SubscriptionStore,
    Target,
};
use tokio::sync::watch;

mod support;
use support::*;

fn ms(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(i64::MIN, |d| d.as_millis() as i64)
}

/// An engine whose clock starts at `base_ms`, polling every 30 s (the
/// tests span hours of the paused clock).
fn engine_at(
    store: Arc<dyn Store>,
    service: Arc<Scripted>,
    base_ms: i64,
) -> Result<Arc<Engine>, Box<dyn std::error::Error>> {
    node_at("node-a", store, service, base_ms, Duration::from_secs(30))
}

/// [`engine_at`] with a node id of its own (two nodes on one store).
fn node_at(
    node: &str,
    store: Arc<dyn Store>,
    service: Arc<Scripted>,
    base_ms: i64,
    poll: Duration,
) -> Result<Arc<Engine>, Box<dyn std::error::Error>> {
    let config = EngineConfig {
        node_id: node.into(),
        shard_size: 20,
        poll_interval: poll,
        clock: Clock::tokio_at(base_ms),
        ..config()?
    };
    Ok(engine_with(store, service, config, EngineMetrics::new()))
}

/// A store with one subscription per `(endpoint, zone)`; their ids.
async fn store_with(
    zones: &[(&str, Option<&str>)],
) -> Result<(Arc<MemoryStore>, Vec<i64>), Box<dyn std::error::Error>> {
    let store = Arc::new(MemoryStore::new());
    let vapid = VapidKey::generate()?;
    let key = store
        .make_vapid_key_current(AppId::DEFAULT, &vapid.public_key_base64url(), &vapid.private_key_base64url(), 0)
        .await?;
    let receiver = ReceiverKeys::generate()?;
    let subs = zones
        .iter()
        .map(|(endpoint, zone)| {
            Ok(NewSubscription {
                app: AppId::DEFAULT,
                subscription: tocsin_protocol::Subscription::new(
                    endpoint.parse()?,
                    receiver.public_key(),
                    receiver.auth(),
                )?,
                user_id: None,
                topics: None,
                tags: None,
                language: None,
                time_zone: zone.map(TimeZoneName::new).transpose()?,
                vapid_key_id: key.id,
                keep_stored_key: false,
            })
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let ids = store.upsert_subscriptions(&subs, 0).await?.into_iter().map(|s| s.id).collect();
    Ok((store, ids))
}

/// Sleeps on the paused clock until the engine's clock (started at
/// `base`) reads `at`.
async fn until(base: i64, start: tokio::time::Instant, at: &str) {
    let target = start + Duration::from_millis(u64::try_from(ms(at) - base).unwrap_or(0));
    tokio::time::sleep_until(target).await;
}

#[tokio::test(start_paused = true)]
async fn a_local_time_reaches_each_zone_at_its_hour_from_utc_plus_14_to_utc_minus_11() -> TestResult {
    const KIRITIMATI: &str = "https://fcm.googleapis.com/fcm/send/kiritimati";
    const BERLIN: &str = "https://fcm.googleapis.com/fcm/send/berlin";
    const NO_ZONE: &str = "https://fcm.googleapis.com/fcm/send/no-zone";
    const PAGO_PAGO: &str = "https://fcm.googleapis.com/fcm/send/pago-pago";
    let (store, _) = store_with(&[
        (KIRITIMATI, Some("Pacific/Kiritimati")),
        (BERLIN, Some("Europe/Berlin")),
        (NO_ZONE, None),
        (PAGO_PAGO, Some("Pacific/Pago_Pago")),
    ])
    .await?;
    // The app's zone for subscribers without one: Tokyo (UTC+9).
    let tokyo = TimeZoneName::new("Asia/Tokyo")?;
    let rules = DeliveryRules { default_time_zone: Some(tokyo.clone()), ..DeliveryRules::default() };
    store.set_app_rules(AppId::DEFAULT, &rules).await?;
    let base = ms("2026-12-23T12:00:00Z");
    let start = tokio::time::Instant::now();
    let plan = LocalSchedule::plan(&LocalDateTime::parse("2026-12-24T09:00")?, &tokyo, false, base)?;
    let message = NewMessage {
        send_at: plan.first_at(),
        rules: MessageRules { local: Some(plan), ..MessageRules::default() },
        created_at: base,
        ..message("local", Target::All(true), b"Merry Christmas")
    };
    store.insert_message(&message).await?;
    let service = Scripted::new(Duration::from_millis(10), delivered);
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(engine_at(store.clone(), service.clone(), base)?.run(stopped));

    until(base, start, "2026-12-23T18:59:00Z").await;
    assert!(service.hits().is_empty(), "nothing before UTC+14's 09:00");
    until(base, start, "2026-12-23T19:02:00Z").await;
    assert_eq!(service.hits().keys().collect::<Vec<_>>(), [KIRITIMATI], "Kiritimati at 19:00Z");
    let m = store.message("local").await?.ok_or("message")?;
    assert_eq!((m.state, m.counts.targeted, m.counts.delivered), (MessageState::Sending, 4, 1));
    // Tokyo's 09:00 (00:00Z) for the subscriber without a zone.
    until(base, start, "2026-12-24T00:02:00Z").await;
    assert!(service.hits().contains_key(NO_ZONE) && !service.hits().contains_key(BERLIN));
    until(base, start, "2026-12-24T07:58:00Z").await;
    assert!(!service.hits().contains_key(BERLIN));
    until(base, start, "2026-12-24T08:02:00Z").await;
    assert!(service.hits().contains_key(BERLIN), "Berlin at 08:00Z");
    until(base, start, "2026-12-24T19:58:00Z").await;
    assert!(!service.hits().contains_key(PAGO_PAGO));
    let waves = store.wave_progress("local").await?;
    assert!(waves.iter().any(|w| w.done < w.shards), "later waves still open: {waves:?}");
    let m = until_done(store.as_ref(), "local", Duration::from_secs(600)).await?;
    assert!(service.hits().contains_key(PAGO_PAGO), "Pago Pago at 20:00Z");
    assert_eq!((m.counts.targeted, m.counts.delivered), (4, 4));
    assert!(service.hits().values().all(|n| *n == 1), "each once: {:?}", service.hits());
    let waves = store.wave_progress("local").await?;
    assert!(waves.iter().all(|w| w.done == w.shards));
    assert_eq!(waves.iter().map(|w| w.delivered).sum::<i64>(), 4);
    stop.send(true)?;
    run.await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn zones_where_the_time_has_passed_are_skipped_when_asked() -> TestResult {
    const BERLIN: &str = "https://fcm.googleapis.com/fcm/send/berlin";
    const NEW_YORK: &str = "https://fcm.googleapis.com/fcm/send/new-york";
    let (store, _) = store_with(&[(BERLIN, Some("Europe/Berlin")), (NEW_YORK, Some("America/New_York"))]).await?;
    // 10:00Z: 11:00 in Berlin (passed), 05:00 in New York.
    let base = ms("2026-12-24T10:00:00Z");
    let start = tokio::time::Instant::now();
    let utc = TimeZoneName::utc();
    let local = LocalDateTime::parse("2026-12-24T09:00")?;
    for (id, skip) in [("skip", true), ("at-once", false)] {
        let plan = LocalSchedule::plan(&local, &utc, skip, base)?;
        let message = NewMessage {
            send_at: plan.first_at(),
            rules: MessageRules { local: Some(plan), ..MessageRules::default() },
            created_at: base,
            ..message(id, Target::All(true), b"hi")
        };
        store.insert_message(&message).await?;
    }
    let service = Scripted::new(Duration::from_millis(10), delivered);
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(engine_at(store.clone(), service.clone(), base)?.run(stopped));
    until(base, start, "2026-12-24T10:05:00Z").await;
    assert_eq!(service.hits().get(BERLIN), Some(&1), "passed and not skipped: at once");
    assert_eq!(service.hits().get(NEW_YORK), None);
    let skip = until_done(store.as_ref(), "skip", Duration::from_secs(86_400)).await?;
    let at_once = until_done(store.as_ref(), "at-once", Duration::from_secs(86_400)).await?;
    assert_eq!((skip.counts.targeted, skip.counts.delivered), (1, 1), "New York only");
    assert_eq!((at_once.counts.targeted, at_once.counts.delivered), (2, 2));
    assert_eq!(service.hits().get(BERLIN), Some(&1));
    assert_eq!(service.hits().get(NEW_YORK), Some(&2));
    stop.send(true)?;
    run.await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn quiet_hours_hold_a_delivery_until_they_end_in_the_subscribers_zone() -> TestResult {
    const PARIS: &str = "https://fcm.googleapis.com/fcm/send/paris";
    const SYDNEY: &str = "https://fcm.googleapis.com/fcm/send/sydney";
    const NO_ZONE: &str = "https://fcm.googleapis.com/fcm/send/no-zone";
    let (store, _) =
        store_with(&[(PARIS, Some("Europe/Paris")), (SYDNEY, Some("Australia/Sydney")), (NO_ZONE, None)]).await?;
    let rules = DeliveryRules::from_json(serde_json::json!({"quietHours": {"start": "22:00", "end": "07:00"}}))?;
    store.set_app_rules(AppId::DEFAULT, &rules).await?;
    // 21:30Z: 22:30 in Paris (quiet), 08:30 in Sydney, 21:30 UTC (no zone).
    let base = ms("2026-12-04T21:30:00Z");
    let start = tokio::time::Instant::now();
    store.insert_message(&NewMessage { created_at: base, ..message("night", Target::All(true), b"sale") }).await?;
    let urgent = NewMessage {
        created_at: base,
        rules: MessageRules { ignore_quiet_hours: true, ..MessageRules::default() },
        ..message("code", Target::All(true), b"your code")
    };
    store.insert_message(&urgent).await?;
    let service = Scripted::new(Duration::from_millis(10), delivered);
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(engine_at(store.clone(), service.clone(), base)?.run(stopped));

    let code = until_done(store.as_ref(), "code", Duration::from_secs(60)).await?;
    assert_eq!((code.counts.delivered, code.counts.held), (3, 0), "ignoreQuietHours is not held");
    until(base, start, "2026-12-04T21:35:00Z").await;
    let night = store.message("night").await?.ok_or("message")?;
    assert_eq!(
        (night.state, night.counts.delivered, night.counts.held, night.counts.pending_retry),
        (MessageState::Sending, 2, 1, 0),
        "Paris held, the others sent"
    );
    assert_eq!(service.hits().get(PARIS), Some(&1), "only the urgent one reached Paris");
    until(base, start, "2026-12-05T05:59:00Z").await;
    assert_eq!(store.message("night").await?.ok_or("message")?.counts.held, 1, "held until 07:00 in Paris");
    let night = until_done(store.as_ref(), "night", Duration::from_secs(3_600)).await?;
    assert_eq!((night.counts.targeted, night.counts.delivered, night.counts.held), (3, 3, 0));
    assert_eq!(service.hits().get(PARIS), Some(&2));
    stop.send(true)?;
    run.await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn frequency_caps_drop_what_is_over_them_with_exact_counts() -> TestResult {
    let endpoints: Vec<(String, Option<&str>)> =
        (0..3).map(|i| (format!("https://fcm.googleapis.com/fcm/send/cap-{i}"), None)).collect();
    let zones: Vec<(&str, Option<&str>)> = endpoints.iter().map(|(e, z)| (e.as_str(), *z)).collect();
    let (store, ids) = store_with(&zones).await?;
    let rules = DeliveryRules::from_json(serde_json::json!({"frequencyCaps": [
        {"max": 2, "per": "1h"},
        {"max": 1, "per": "1d", "tag": "promo"}
    ]}))?;
    store.set_app_rules(AppId::DEFAULT, &rules).await?;
    let base = ms("2026-12-04T12:00:00Z");
    let start = tokio::time::Instant::now();
    let service = Scripted::new(Duration::from_millis(10), delivered);
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(engine_at(store.clone(), service.clone(), base)?.run(stopped));
    let send = |id: &'static str, rules: MessageRules| {
        let store = store.clone();
        async move {
            let created = base + i64::try_from(start.elapsed().as_millis()).unwrap_or(0);
            store
                .insert_message(&NewMessage { created_at: created, rules, ..message(id, Target::All(true), b"x") })
                .await?;
            until_done(store.as_ref(), id, Duration::from_secs(600)).await
        }
    };
    let plain = MessageRules::default;
    let promo = || MessageRules { tags: vec!["promo".into(), "sale".into()], ..MessageRules::default() };
    let counts = |m: tocsin_store_api::Message| (m.counts.delivered, m.counts.capped);
    assert_eq!(counts(send("m1", plain()).await?), (3, 0));
    assert_eq!(counts(send("m2", plain()).await?), (3, 0));
    let m3 = send("m3", plain()).await?;
    assert_eq!(counts(m3), (0, 3), "two an hour");
    let failures = store.message_failures("m3").await?;
    assert_eq!(failures, vec![("capped".to_owned(), 3)]);
    let examples = store.message_failure_examples("m3").await?;
    assert!(examples[0].1.contains("over the cap of 2 per 1h"), "{examples:?}");
    let bypass = MessageRules { frequency_cap: false, ..MessageRules::default() };
    assert_eq!(counts(send("m4", bypass).await?), (3, 0), "frequencyCap: false bypasses, and is not counted");
    until(base, start, "2026-12-04T13:01:00Z").await;
    assert_eq!(counts(send("m5", promo()).await?), (3, 0), "an hour later, the first promo");
    assert_eq!(counts(send("m6", promo()).await?), (0, 3), "one promo a day");
    assert_eq!(counts(send("m7", plain()).await?), (3, 0), "the promo counts in the hour: 2 of 2");
    assert_eq!(counts(send("m8", plain()).await?), (0, 3));
    // What each subscription keeps is small: the rules' latest deliveries.
    for id in ids {
        let sub = store.subscription(id).await?.ok_or("subscription")?;
        let history = tocsin_audience::rules::SendHistory::from_stored(sub.send_history.as_deref());
        assert!(history.0.len() <= 3, "{history:?}");
    }
    let hits: u32 = service.hits().values().sum();
    assert_eq!(hits, 3 * 5, "m1, m2, m4, m5, m7");
    stop.send(true)?;
    run.await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_throttle_holds_its_rate_over_two_nodes() -> TestResult {
    let endpoints: Vec<String> = (0..300).map(|i| format!("https://fcm.googleapis.com/fcm/send/t-{i}")).collect();
    let zones: Vec<(&str, Option<&str>)> = endpoints.iter().map(|e| (e.as_str(), None)).collect();
    let (store, _) = store_with(&zones).await?;
    let base = ms("2026-12-04T12:00:00Z");
    let rules = MessageRules { rate_per_minute: 600, ..MessageRules::default() };
    store.insert_message(&NewMessage { created_at: base, rules, ..message("slow", Target::All(true), b"x") }).await?;
    let (a, b) =
        (Scripted::new(Duration::from_millis(10), delivered), Scripted::new(Duration::from_millis(10), delivered));
    let (stop, stopped) = watch::channel(false);
    // Polling as `tocsin serve` does, so that both nodes take part.
    let poll = Duration::from_millis(250);
    let run_a = tokio::spawn(node_at("node-a", store.clone(), a.clone(), base, poll)?.run(stopped.clone()));
    let run_b = tokio::spawn(node_at("node-b", store.clone(), b.clone(), base, poll)?.run(stopped));
    let m = until_done(store.as_ref(), "slow", Duration::from_secs(600)).await?;
    assert_eq!((m.counts.targeted, m.counts.delivered), (300, 300));
    let mut times = a.times();
    times.extend(b.times());
    times.sort();
    assert_eq!(times.len(), 300, "each once");
    assert!(
        !a.times().is_empty() && !b.times().is_empty(),
        "both nodes sent: {} and {}",
        a.times().len(),
        b.times().len()
    );
    // 600 a minute: 299 intervals of 100 ms, within 10 %.
    let span = (times[299] - times[0]).as_secs_f64();
    eprintln!("300 at 600/min over two nodes ({} and {}): {span:.2} s, 29.9 s due", a.times().len(), b.times().len());
    assert!((span - 29.9).abs() <= 2.99, "the 300 took {span} s");
    // And no ten seconds hold more than 10 % over their share (100).
    for (i, t) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|u| **u - *t < Duration::from_secs(10)).count();
        assert!(within <= 110, "{within} in the 10 s from the {i}th");
    }
    stop.send(true)?;
    run_a.await?;
    run_b.await?;
    Ok(())
}

/// Above 1,000 a second the slots are fractions of a ms apart; a ms
/// granularity would cap every throttle at 1,000 a second (the benchmark
/// found it: 300,000 a minute sent at 60,000).
#[tokio::test(start_paused = true)]
async fn a_throttle_above_a_thousand_a_second_keeps_its_rate() -> TestResult {
    let endpoints: Vec<String> = (0..600).map(|i| format!("https://fcm.googleapis.com/fcm/send/f-{i}")).collect();
    let zones: Vec<(&str, Option<&str>)> = endpoints.iter().map(|e| (e.as_str(), None)).collect();
    let (store, _) = store_with(&zones).await?;
    let base = ms("2026-12-04T12:00:00Z");
    let rules = MessageRules { rate_per_minute: 120_000, ..MessageRules::default() };
    store.insert_message(&NewMessage { created_at: base, rules, ..message("fast", Target::All(true), b"x") }).await?;
    // Answered at once: the test engine's four requests in flight per lane
    // must not be what holds the rate down.
    let service = Scripted::new(Duration::ZERO, delivered);
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(engine_at(store.clone(), service.clone(), base)?.run(stopped));
    let m = until_done(store.as_ref(), "fast", Duration::from_secs(60)).await?;
    assert_eq!(m.counts.delivered, 600);
    let mut times = service.times();
    times.sort();
    // 2,000 a second: 599 intervals of 0.5 ms.
    let span = (times[599] - times[0]).as_secs_f64();
    eprintln!("600 at 120000/min: {span:.4} s, 0.2995 s due");
    assert!((span - 0.2995).abs() <= 0.03, "the 600 took {span} s");
    stop.send(true)?;
    run.await?;
    Ok(())
}

/// A throttled message whose next slot is a minute away does not hold a
/// worker for that minute: its shard is given back until then, and a
/// message created after it goes out at once.
#[tokio::test(start_paused = true)]
async fn slow_throttles_do_not_starve_other_messages() -> TestResult {
    let endpoints: Vec<String> = (0..12).map(|i| format!("https://fcm.googleapis.com/fcm/send/s-{i}")).collect();
    let zones: Vec<(&str, Option<&str>)> = endpoints.iter().map(|e| (e.as_str(), None)).collect();
    let (store, ids) = store_with(&zones).await?;
    let base = ms("2026-12-04T12:00:00Z");
    // Four messages at one a minute, more than the node's four workers can wait on.
    for (n, chunk) in ids.chunks(3).enumerate() {
        let rules = MessageRules { rate_per_minute: 1, ..MessageRules::default() };
        let m = NewMessage {
            created_at: base,
            rules,
            ..message(&format!("slow-{n}"), Target::SubscriptionIds(chunk.to_vec()), b"x")
        };
        store.insert_message(&m).await?;
    }
    let service = Scripted::new(Duration::from_millis(10), delivered);
    let (stop, stopped) = watch::channel(false);
    let engine = engine_at(store.clone(), service.clone(), base)?;
    let run = tokio::spawn(engine.clone().run(stopped));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = tokio::time::Instant::now();
    store.insert_message(&NewMessage { created_at: base + 2_000, ..message("plain", Target::All(true), b"y") }).await?;
    engine.wake(); // as the API does when it stores a message
    let plain = until_done(store.as_ref(), "plain", Duration::from_secs(120)).await?;
    let waited = started.elapsed();
    assert_eq!(plain.counts.delivered, 12);
    assert!(waited < Duration::from_secs(5), "the plain message waited {waited:?} behind the throttled ones");
    for n in 0..4 {
        let m = until_done(store.as_ref(), &format!("slow-{n}"), Duration::from_secs(600)).await?;
        assert_eq!(m.counts.delivered, 3);
    }
    let slow_span = started.elapsed();
    assert!(slow_span >= Duration::from_secs(110), "three at one a minute take two minutes: {slow_span:?}");
    stop.send(true)?;
    run.await?;
    Ok(())
}

fn busy_once(nth: u32) -> tocsin_protocol::Outcome {
    match nth {
        1 => tocsin_protocol::Outcome::Retry {
            reason: tocsin_protocol::RetryReason::ServerError(503),
            after: Some(Duration::from_secs(1)),
        },
        _ => tocsin_protocol::Outcome::Delivered { status: 201 },
    }
}

/// A claimed batch of retries holding a slow throttled message's and a
/// plain message's: the throttled ones are given back until their slot,
/// and the plain one is retried at once (it waited a minute behind them).
#[tokio::test(start_paused = true)]
async fn a_slow_throttle_s_retries_do_not_hold_back_another_message_s() -> TestResult {
    const SLOW: &str = "https://fcm.googleapis.com/fcm/send/slow";
    const PLAIN: &str = "https://fcm.googleapis.com/fcm/send/plain";
    let (store, ids) = store_with(&[(SLOW, None), (PLAIN, None)]).await?;
    let base = ms("2026-12-04T12:00:00Z");
    let rules = MessageRules { rate_per_minute: 1, ..MessageRules::default() };
    let slow = NewMessage { created_at: base, rules, ..message("slow", Target::SubscriptionIds(vec![ids[0]]), b"x") };
    store.insert_message(&slow).await?;
    store
        .insert_message(&NewMessage {
            created_at: base,
            ..message("plain", Target::SubscriptionIds(vec![ids[1]]), b"y")
        })
        .await?;
    let service = Scripted::new(Duration::from_millis(10), busy_once);
    let (stop, stopped) = watch::channel(false);
    let started = tokio::time::Instant::now();
    // Polling as `tocsin serve` does: a retry comes due without a wake-up.
    let engine = node_at("node-a", store.clone(), service.clone(), base, Duration::from_millis(250))?;
    let run = tokio::spawn(engine.run(stopped));
    let plain = until_done(store.as_ref(), "plain", Duration::from_secs(300)).await?;
    let waited = started.elapsed();
    assert_eq!(plain.counts.delivered, 1);
    assert!(waited < Duration::from_secs(10), "the plain message's retry waited {waited:?}");
    let slow = until_done(store.as_ref(), "slow", Duration::from_secs(300)).await?;
    assert_eq!(slow.counts.delivered, 1);
    assert!(started.elapsed() >= Duration::from_secs(59), "the slow one's second attempt waits for its slot");
    stop.send(true)?;
    run.await?;
    Ok(())
}
