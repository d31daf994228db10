//! What the engine's tests share: a scripted push service, an engine on
//! the test's (paused) runtime against the in-memory store, and waiting
//! for a message to be done.

#![allow(dead_code)] // each test file uses its own part of it

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tocsin_delivery::engine::{Clock, EndpointCheck, Engine, EngineConfig, EngineMetrics};
use tocsin_delivery::fanout::BroadcastConfig;
use tocsin_delivery::Transport;
use tocsin_protocol::{Outcome, VapidSubject};
use tocsin_store_api::{Message, MessageState, Store};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A push service that takes `delay` to answer each request and answers
/// with `answer(nth request for this endpoint)`. It counts a request when
/// it arrives, before its answer: a request that was aborted still reached it.
pub struct Scripted {
    delay: Duration,
    answer: fn(u32) -> Outcome,
    hits: Mutex<HashMap<String, u32>>,
    /// Each request's endpoint and body, in the order they arrived.
    bodies: Mutex<Vec<(String, Bytes)>>,
    /// When each request arrived (on the test's clock).
    times: Mutex<Vec<tokio::time::Instant>>,
}

impl Scripted {
    pub fn new(delay: Duration, answer: fn(u32) -> Outcome) -> Arc<Self> {
        Arc::new(Self { delay, answer, hits: Mutex::default(), bodies: Mutex::default(), times: Mutex::default() })
    }

    pub fn hits(&self) -> HashMap<String, u32> {
        self.hits.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// When each request arrived, in order.
    pub fn times(&self) -> Vec<tokio::time::Instant> {
        self.times.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Each request's endpoint and (encrypted) body.
    pub fn bodies(&self) -> Vec<(String, Bytes)> {
        self.bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Transport for Scripted {
    fn send(&self, request: http::Request<Bytes>) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        let nth = self
            .hits
            .lock()
            .map(|mut h| {
                let n = h.entry(request.uri().to_string()).or_default();
                *n += 1;
                *n
            })
            .unwrap_or(0);
        if let Ok(mut t) = self.times.lock() {
            t.push(tokio::time::Instant::now());
        }
        if let Ok(mut b) = self.bodies.lock() {
            b.push((request.uri().to_string(), request.body().clone()));
        }
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            (self.answer)(nth)
        })
    }
}

pub struct AnyEndpoint;
impl EndpointCheck for AnyEndpoint {
    fn check(&self, _: &url::Url) -> Result<(), String> {
        Ok(())
    }
}

/// An engine on the caller's (paused) runtime: two lanes of two workers,
/// two requests in flight per lane.
pub fn engine(
    store: Arc<dyn Store>,
    service: Arc<Scripted>,
    lease: Duration,
    page: i64,
    shard: i64,
    metrics: EngineMetrics,
) -> Result<Arc<Engine>, Box<dyn std::error::Error>> {
    Ok(engine_with(store, service, EngineConfig { lease, page_size: page, shard_size: shard, ..config()? }, metrics))
}

/// The tests' engine settings: node `node-a`, two lanes of two workers,
/// four requests in flight per lane, polling every 250 ms, tokio's clock.
pub fn config() -> Result<EngineConfig, Box<dyn std::error::Error>> {
    Ok(EngineConfig {
        node_id: "node-a".into(),
        shard_size: 100,
        page_size: 100,
        lease: Duration::from_secs(30),
        threads: 2,
        own_threads: false,
        workers: 2,
        concurrency: 4,
        per_origin: 4,
        retry: BroadcastConfig { max_attempts: 5, retry_base: Duration::from_secs(1), ..BroadcastConfig::default() },
        poll_interval: Duration::from_millis(250),
        subject: VapidSubject::new("mailto:tests@tocsin-tests.org")?,
        clock: Clock::tokio(),
    })
}

/// An engine with `config` sending to `service` (one transport per lane).
pub fn engine_with(
    store: Arc<dyn Store>,
    service: Arc<Scripted>,
    config: EngineConfig,
    metrics: EngineMetrics,
) -> Arc<Engine> {
    let transports: Vec<Arc<dyn Transport>> = vec![service.clone(), service];
    Engine::with_transports(store, transports, config, Arc::new(AnyEndpoint), metrics)
}

/// Waits (on the paused clock) until the message is done, at most `limit`.
pub async fn until_done(store: &dyn Store, id: &str, limit: Duration) -> Result<Message, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = store.message(id).await?.ok_or("message missing")?;
        if m.state == MessageState::Done {
            return Ok(m);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not done after {limit:?}: {m:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn delivered(_: u32) -> Outcome {
    Outcome::Delivered { status: 201 }
}

/// Stores, in the default app, a subscription at each endpoint (all with
/// `receiver`'s keys) made with VAPID key `key`; their ids, in order.
pub async fn subscribe_all(
    store: &dyn Store,
    key: i64,
    endpoints: &[String],
    receiver: &tocsin_protocol::ece::ReceiverKeys,
) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
    let subs = endpoints
        .iter()
        .map(|e| {
            Ok(tocsin_store_api::NewSubscription {
                app: tocsin_store_api::AppId::DEFAULT,
                subscription: tocsin_protocol::Subscription::new(e.parse()?, receiver.public_key(), receiver.auth())?,
                user_id: None,
                topics: None,
                tags: None,
                language: None,
                time_zone: None,
                vapid_key_id: key,
                keep_stored_key: false,
            })
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    Ok(store.upsert_subscriptions(&subs, 0).await?.into_iter().map(|s| s.id).collect())
}

/// A classic message of the default app to `target`, created now (on the
/// test's clock), kept a day.
pub fn message(id: &str, target: tocsin_store_api::Target, payload: &[u8]) -> tocsin_store_api::NewMessage {
    tocsin_store_api::NewMessage {
        payload: Some(payload.to_vec()),
        ttl: 86_400,
        ..tocsin_store_api::NewMessage::new(id, tocsin_store_api::AppId::DEFAULT, target, Clock::tokio().now_ms())
    }
}
