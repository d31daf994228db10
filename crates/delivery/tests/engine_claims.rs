//! The engine's claims, heartbeats and retries, against the in-memory store
//! and scripted push services, under tokio's paused clock: minutes of leases
//! and slow answers run in milliseconds, and the same every time.

use std::sync::Arc;
use std::time::Duration;
use tocsin_store_api::MessageStore;

use tocsin_delivery::engine::{Clock, EngineMetrics};
use tocsin_protocol::ece::ReceiverKeys;
use tocsin_protocol::outcome::RetryReason;
use tocsin_protocol::{Outcome, VapidKey};
use tocsin_store_api::memory::MemoryStore;
use tocsin_store_api::{AppId, Message, MessageState, Store, Target};
use tokio::sync::watch;

mod support;
use support::*;

/// `n` subscriptions and one broadcast to them, stored.
async fn broadcast(store: &dyn Store, n: usize) -> Result<String, Box<dyn std::error::Error>> {
    let vapid = VapidKey::generate()?;
    let key = store
        .make_vapid_key_current(AppId::DEFAULT, &vapid.public_key_base64url(), &vapid.private_key_base64url(), 0)
        .await?;
    let endpoints: Vec<String> = (0..n).map(|i| format!("https://push.example.net/s/{i}")).collect();
    subscribe_all(store, key.id, &endpoints, &ReceiverKeys::generate()?).await?;
    let message = message("m1", Target::All(true), b"hello");
    store.insert_message(&message).await?;
    Ok(message.id)
}

/// Pages that take far longer than the lease: the heartbeat keeps each
/// claim, so no other worker (two engines with one node id, four workers
/// each) takes a shard over; each subscription is reached once, counted once.
#[tokio::test(start_paused = true)]
async fn pages_longer_than_the_lease_are_sent_once() -> TestResult {
    let store = Arc::new(MemoryStore::new());
    let id = broadcast(store.as_ref(), 120).await?;
    // 20 per page, 2 in flight per lane, 2.5 s each: 25 s a page, lease 3 s.
    let service = Scripted::new(Duration::from_millis(2500), delivered);
    let (stop, stopped) = watch::channel(false);
    let lease = Duration::from_secs(3);
    let a = engine(store.clone(), service.clone(), lease, 20, 40, EngineMetrics::new())?;
    let b = engine(store.clone(), service.clone(), lease, 20, 40, EngineMetrics::new())?;
    let runs = [tokio::spawn(a.run(stopped.clone())), tokio::spawn(b.run(stopped))];
    let m = until_done(store.as_ref(), &id, Duration::from_secs(600)).await?;
    stop.send(true)?;
    for run in runs {
        run.await?;
    }
    let hits = service.hits();
    assert_eq!(hits.len(), 120, "every subscription reached");
    let twice: Vec<_> = hits.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "reached more than once: {twice:?}");
    assert_eq!((m.counts.targeted, m.counts.delivered, m.counts.pending_retry), (120, 120, 0), "{m:?}");
    assert!(store.renewals() >= 3 * 6, "the heartbeat ran: {} renewals", store.renewals());
    Ok(())
}

/// Once the heartbeat is refused (another worker has claimed the shard),
/// the worker stops sending the rest of its page and records nothing.
#[tokio::test(start_paused = true)]
async fn a_worker_that_loses_its_claim_stops_and_records_nothing() -> TestResult {
    let store = Arc::new(MemoryStore::new());
    let id = broadcast(store.as_ref(), 20).await?;
    store.refuse_renewals();
    let service = Scripted::new(Duration::from_millis(2500), delivered);
    let metrics = EngineMetrics::new();
    let (stop, stopped) = watch::channel(false);
    let engine = engine(store.clone(), service.clone(), Duration::from_secs(3), 20, 20, metrics.clone())?;
    let run = tokio::spawn(engine.run(stopped));
    // The first heartbeat, a third of the lease in, is refused; the shard
    // could be claimed again only once the lease has run out (3 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.send(true)?;
    run.await?;
    let reached: u32 = service.hits().values().sum();
    assert!((1..=2).contains(&reached), "only the lane's 2 in flight were sent, not the page of 20: {reached}");
    let m = store.message(&id).await?.ok_or("m1")?;
    assert_eq!((m.state, m.counts.delivered, m.counts.failed), (MessageState::Sending, 0, 0), "{m:?}");
    assert_eq!(metrics.claims_lost.get(), 1);
    Ok(())
}

/// A service that first answers 503 (with `Retry-After: after`, if given)
/// to each subscription, then 201.
fn busy_first(nth: u32, after: Option<Duration>) -> Outcome {
    if nth == 1 {
        Outcome::Retry { reason: RetryReason::ServerError(503), after }
    } else {
        Outcome::Delivered { status: 201 }
    }
}

/// A broadcast to 30 through `answer` (200 ms each), run until it is done.
async fn retried_broadcast(answer: fn(u32) -> Outcome) -> Result<(Message, Arc<Scripted>), Box<dyn std::error::Error>> {
    let store = Arc::new(MemoryStore::new());
    let id = broadcast(store.as_ref(), 30).await?;
    let service = Scripted::new(Duration::from_millis(200), answer);
    let (stop, stopped) = watch::channel(false);
    let engine = engine(store.clone(), service.clone(), Duration::from_secs(3), 10, 30, EngineMetrics::new())?;
    let run = tokio::spawn(engine.run(stopped));
    let m = until_done(store.as_ref(), &id, Duration::from_secs(3600)).await?;
    stop.send(true)?;
    run.await?;
    Ok((m, service))
}

/// A service that first answers 503, then 201: the retries wait out their
/// backoff on the paused clock and are claimed and recorded once each.
#[tokio::test(start_paused = true)]
async fn retries_are_claimed_and_recorded_once() -> TestResult {
    let (m, service) = retried_broadcast(|nth| busy_first(nth, None)).await?;
    assert!(service.hits().values().all(|n| *n == 2), "{:?}", service.hits());
    assert_eq!((m.counts.delivered, m.counts.pending_retry, m.counts.failed), (30, 0, 0), "{m:?}");
    Ok(())
}

/// Cancelled in the middle of a broadcast: the page in flight stops at its
/// next heartbeat, what had been answered is counted, nothing more is sent.
#[tokio::test(start_paused = true)]
async fn a_cancel_stops_the_page_in_flight_and_counts_what_was_sent() -> TestResult {
    let store = Arc::new(MemoryStore::new());
    let id = broadcast(store.as_ref(), 80).await?;
    let service = Scripted::new(Duration::from_millis(2500), delivered);
    let (stop, stopped) = watch::channel(false);
    let engine = engine(store.clone(), service.clone(), Duration::from_secs(3), 20, 20, EngineMetrics::new())?;
    let run = tokio::spawn(engine.run(stopped));
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    let cancelled = store.cancel_message(AppId::DEFAULT, &id, Clock::tokio().now_ms()).await?.ok_or("m1")?;
    assert_eq!(cancelled.state, MessageState::Cancelled);
    let reached_at_cancel: u32 = service.hits().values().sum();
    tokio::time::sleep(Duration::from_secs(60)).await;
    stop.send(true)?;
    run.await?;
    let reached: u32 = service.hits().values().sum();
    let m = store.message(&id).await?.ok_or("m1")?;
    // Four requests in flight at most (two lanes of two) when the pages stopped.
    assert!(reached <= reached_at_cancel + 4, "sent on after the cancel: {reached_at_cancel} then {reached}");
    assert!(m.counts.delivered > 0 && i64::from(reached) - m.counts.delivered <= 4, "{reached} reached, {m:?}");
    assert!(reached < 80, "the broadcast went on: {reached}");
    assert_eq!((m.state, m.counts.pending_retry), (MessageState::Cancelled, 0));
    Ok(())
}

/// A push service that answers the first request to each subscription 503
/// with `Retry-After: 10`: each answer closes the origin's gate for 10 s,
/// and the deliveries waiting behind it are deferred, not sent. A deferral
/// is not an attempt, so none of them runs out of attempts: every
/// subscription is delivered, after exactly two requests.
#[tokio::test(start_paused = true)]
async fn a_retry_after_defers_deliveries_without_using_up_their_attempts() -> TestResult {
    let (m, service) = retried_broadcast(|nth| busy_first(nth, Some(Duration::from_secs(10)))).await?;
    assert_eq!((m.counts.delivered, m.counts.failed), (30, 0), "{m:?}");
    assert!(service.hits().values().all(|n| *n == 2), "{:?}", service.hits());
    Ok(())
}

/// The database goes away for a page in flight: its checkpoints fail for
/// longer than the lease (about 40 s, lease 3 s), and one more is written
/// but answered as lost. The page keeps its results and writes them under
/// its claim when the database is back; meanwhile the other workers, done
/// with theirs, claim nothing new; nobody is reached twice and every page
/// is counted once.
#[tokio::test(start_paused = true)]
async fn results_wait_for_the_database_and_are_counted_once() -> TestResult {
    let store = Arc::new(MemoryStore::new());
    let id = broadcast(store.as_ref(), 200).await?;
    // Shard 0's checkpoints: about 40 s of failures with the engine's
    // backoff (0.1 s doubling to 2 s), then an answer lost.
    store.go_away(0, 24, 1);
    let service = Scripted::new(Duration::from_millis(50), delivered);
    sent_once_each(&store, &service, &id, 200).await?;
    assert_eq!(store.claims_while_away(), 0, "a shard was claimed while a page's results waited");
    Ok(())
}

/// Pages far slower than the lease (25 s a page, lease 3 s) while the
/// heartbeat cannot reach the database for 12 s, four leases: the claim
/// is not given up for that (nobody else took the work), so nothing is
/// aborted and sent again; each subscription is reached once.
#[tokio::test(start_paused = true)]
async fn a_heartbeat_that_cannot_reach_the_database_keeps_the_work() -> TestResult {
    let store = Arc::new(MemoryStore::new());
    let id = broadcast(store.as_ref(), 40).await?;
    // Heartbeats every second: the next twelve fail.
    store.fail_renewals(12);
    let service = Scripted::new(Duration::from_millis(2500), delivered);
    sent_once_each(&store, &service, &id, 40).await
}

/// Runs one engine (lease 3 s, pages of 20, shards of 40) until message
/// `id` is done, and checks that each of its `n` subscriptions was reached
/// exactly once and counted once.
async fn sent_once_each(store: &Arc<MemoryStore>, service: &Arc<Scripted>, id: &str, n: usize) -> TestResult {
    let (stop, stopped) = watch::channel(false);
    let engine = engine(store.clone(), service.clone(), Duration::from_secs(3), 20, 40, EngineMetrics::new())?;
    let run = tokio::spawn(engine.run(stopped));
    let m = until_done(store.as_ref(), id, Duration::from_secs(600)).await?;
    stop.send(true)?;
    run.await?;
    let hits = service.hits();
    assert_eq!(hits.len(), n, "every subscription reached");
    let twice: Vec<_> = hits.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "reached more than once: {twice:?}");
    let n = n as i64;
    assert_eq!((m.counts.targeted, m.counts.delivered, m.counts.pending_retry), (n, n, 0), "{m:?}");
    Ok(())
}
