//! Per-origin state is bounded: an origin unused for an hour is forgotten
//! (its gate, statistics and latency series), and `/metrics` names at most
//! `MAX_ORIGIN_LABELS` origins, the rest summed as `other`. On the paused
//! clock, against scripted push services.

use std::sync::Arc;
use std::time::Duration;
use tocsin_store_api::AppStore;
use tocsin_store_api::MessageStore;

use prometheus_client::registry::Registry;
use tocsin_delivery::engine::{EngineMetrics, MAX_ORIGIN_LABELS};
use tocsin_protocol::ece::ReceiverKeys;
use tocsin_protocol::VapidKey;
use tocsin_store_api::memory::MemoryStore;
use tocsin_store_api::{AppId, Target};
use tokio::sync::watch;

mod support;
use support::*;

/// Stores a subscription at each endpoint and a message to all of them.
async fn message_to(store: &MemoryStore, key: i64, id: &str, endpoints: &[String]) -> TestResult {
    let ids = subscribe_all(store, key, endpoints, &ReceiverKeys::generate()?).await?;
    store.insert_message(&message(id, Target::SubscriptionIds(ids), b"hello")).await?;
    Ok(())
}

fn origins(range: std::ops::Range<u16>) -> Vec<String> {
    range.map(|i| format!("https://push{i}.example.net/s")).collect()
}

#[tokio::test(start_paused = true)]
async fn origins_unused_for_an_hour_are_forgotten_and_metrics_are_capped() -> TestResult {
    let store = Arc::new(MemoryStore::new());
    let vapid = VapidKey::generate()?;
    let key = store
        .make_vapid_key_current(AppId::DEFAULT, &vapid.public_key_base64url(), &vapid.private_key_base64url(), 0)
        .await?
        .id;
    let service = Scripted::new(Duration::from_millis(5), delivered);
    let metrics = EngineMetrics::new();
    let engine = engine(store.clone(), service.clone(), Duration::from_secs(30), 100, 100, metrics.clone())?;
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(engine.clone().run(stopped));

    message_to(&store, key, "m1", &origins(0..60)).await?;
    until_done(store.as_ref(), "m1", Duration::from_secs(60)).await?;
    assert_eq!(engine.origins_tracked(), 60);
    let mut registry = Registry::default();
    metrics.register(&mut registry, "node-a");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    let labels: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("push_latency_seconds_count{"))
        .filter_map(|l| l.split("origin=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(labels.len(), MAX_ORIGIN_LABELS + 1, "{labels:?}");
    assert!(labels.contains("other"));

    // An hour later a message to a new origin: the 60 idle ones go.
    tokio::time::sleep(Duration::from_secs(3601)).await;
    message_to(&store, key, "m2", &origins(100..101)).await?;
    until_done(store.as_ref(), "m2", Duration::from_secs(60)).await?;
    assert_eq!(engine.origins_tracked(), 1, "only the origin in use is kept");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    let own = text.lines().filter(|l| l.starts_with("push_latency_seconds_count{origin=\"https://push")).count();
    assert_eq!(own, 1, "the forgotten origins' series are gone:\n{text}");
    stop.send(true)?;
    run.await?;
    Ok(())
}
