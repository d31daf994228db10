//! The delivery engine behind `tocsin serve`.
//!
//! A message's audience is split into shards (ranges of subscription ids)
//! when it starts. Any node claims a shard under a lease, walks it page by
//! page, and records each page (outcomes, cursor, renewed lease) in one short
//! transaction, never while a request to a push service is open. A node that
//! dies leaves its lease to run out; another node then takes the shard over
//! from its last checkpoint, so at most one page is sent twice. Deliveries
//! that must be retried (429, 406, 5xx, timeouts, network errors) become
//! rows with a due time, claimed the same way. A message is `done` when its
//! shards are closed and no retry waits.
//!
//! On PostgreSQL several processes share this work with nothing between them
//! but the database (`FOR UPDATE SKIP LOCKED`); on SQLite one process owns it.
//!
//! Inside a process the engine runs thread per core: each thread has a
//! single-threaded runtime, its own HTTP client (so its own connections), its
//! share of the in-flight and per-origin limits, and its own workers. A
//! delivery's encryption, its request and its connection's HTTP/2 task all
//! stay on one thread, with no wake-up across threads per delivery. On
//! PostgreSQL, database calls go back to the runtime that started the engine
//! (a few per page), so every connection's socket stays on one runtime.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tocsin_protocol::request::{self, PushOptions};
use tocsin_protocol::{FailReason, Outcome, Topic, Ttl, Urgency, VapidKey, VapidSigner, VapidSubject};
use tocsin_store::{
    Message, MessageState, NewRetry, PageOutcome, RetryItem, Shard, ShardProgress, Store, StoreError,
    StoredSubscription,
};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::client::{ClientConfig, ClientError};
use crate::fanout::{backoff, BroadcastConfig};
use crate::PushClient;

/// How the engine works.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This process's name in leases and metrics.
    pub node_id: String,
    /// Subscriptions per shard (the unit of work nodes claim).
    pub shard_size: i64,
    /// Subscriptions read and checkpointed at a time.
    pub page_size: i64,
    /// How long a claim lasts without a checkpoint; a dead node's work is
    /// taken over after this.
    pub lease: Duration,
    /// Threads sending (one per core is right); fewer when `concurrency` or
    /// `per_origin` is smaller, so that each thread has at least one permit.
    pub threads: usize,
    /// Tasks claiming work on each thread. Two keep a thread sending while
    /// one of them records a page and reads the next.
    pub workers: usize,
    /// Requests in flight, over all push services (split between the threads).
    pub concurrency: usize,
    /// Requests in flight to one push service origin (split between the threads).
    pub per_origin: usize,
    /// Attempts per delivery (the first included) and the backoff between them.
    pub retry: BroadcastConfig,
    /// How often to look for work when nobody wakes the engine.
    pub poll_interval: Duration,
    /// The VAPID subject tokens are signed with.
    pub subject: VapidSubject,
}

/// What the engine needs to decide whether an endpoint may be sent to.
pub trait EndpointCheck: Send + Sync + 'static {
    /// `Err(reason)` when the endpoint must not be contacted.
    fn check(&self, endpoint: &url::Url) -> Result<(), String>;
}

/// Label pairs of a metric.
type Labels = Vec<(String, String)>;

/// Counters and histograms the engine keeps, for `/metrics`.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// Deliveries by outcome (`delivered`, `gone`, `expired`, `failed`,
    /// `retry`) and reason.
    pub deliveries: Family<Labels, Counter>,
    /// Retries scheduled.
    pub retries: Counter,
    /// Requests to push services in flight.
    pub in_flight: Gauge,
    /// Latency of push requests by origin.
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// The two series counted on every delivery, looked up once (a lookup
    /// builds and hashes the label strings).
    delivered: Counter,
    gone: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineMetrics {
    /// Fresh metrics.
    pub fn new() -> Self {
        let deliveries: Family<Labels, Counter> = Family::default();
        let series = |outcome: &str| {
            deliveries
                .get_or_create(&vec![("outcome".into(), outcome.into()), ("reason".into(), String::new())])
                .clone()
        };
        let (delivered, gone) = (series("delivered"), series("gone"));
        Self {
            deliveries,
            delivered,
            gone,
            retries: Counter::default(),
            in_flight: Gauge::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }

    /// Registers them (clones share the values).
    pub fn register(&self, registry: &mut Registry, node: &str) {
        let info: Family<Labels, Gauge> = Family::default();
        info.get_or_create(&vec![("node".into(), node.to_owned())]).set(1);
        registry.register("node", "This process's node id", info);
        registry.register("deliveries", "Deliveries by outcome and reason", self.deliveries.clone());
        registry.register("retries_scheduled", "Deliveries scheduled for another attempt", self.retries.clone());
        registry.register("push_in_flight", "Requests to push services in flight", self.in_flight.clone());
        registry.register("push_latency_seconds", "Push request latency by push service origin", self.latency.clone());
    }

    fn count(&self, outcome: &str, reason: &str) {
        self.deliveries
            .get_or_create(&vec![("outcome".into(), outcome.into()), ("reason".into(), reason.into())])
            .inc();
    }
}

/// Slows the requests to one push service after it asked to (`Retry-After`),
/// for every thread. The bound on requests in flight is per thread: [`Lane`].
struct OriginGate {
    not_before: Mutex<Option<Instant>>,
    /// This origin's series of `push_latency_seconds`, looked up once.
    latency: Histogram,
}

/// A gate wait longer than this is not waited for: the delivery is
/// rescheduled instead, so a worker is not held for a long `Retry-After`.
const MAX_GATE_WAIT: Duration = Duration::from_secs(2);

impl OriginGate {
    /// Takes a permit of `permits` (this thread's share for the origin), then
    /// waits out a short `Retry-After`; a long one is returned instead.
    async fn enter(&self, permits: Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Duration> {
        let permit = permits.acquire_owned().await.map_err(|_| Duration::ZERO)?;
        loop {
            let wait = self
                .not_before
                .lock()
                .ok()
                .and_then(|nb| *nb)
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                return Ok(permit);
            }
            if wait > MAX_GATE_WAIT {
                return Err(wait);
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn slow_down(&self, after: Duration) {
        if let Ok(mut nb) = self.not_before.lock() {
            let until = Instant::now() + after;
            if nb.is_none_or(|t| t < until) {
                *nb = Some(until);
            }
        }
    }
}

/// Runs messages through to `done`.
pub struct Engine {
    store: Arc<dyn Store>,
    /// One client per thread.
    clients: Vec<PushClient>,
    config: EngineConfig,
    wake: Notify,
    policy: Arc<dyn EndpointCheck>,
    signers: Mutex<HashMap<i64, Arc<VapidSigner>>>,
    gates: Mutex<HashMap<String, Arc<OriginGate>>>,
    mismatch_logged: Mutex<HashSet<String>>,
    metrics: EngineMetrics,
}

/// One sending thread's own things.
struct Lane {
    store: Arc<dyn Store>,
    client: PushClient,
    /// This thread's share of [`EngineConfig::concurrency`].
    in_flight: Arc<Semaphore>,
    /// This thread's share of [`EngineConfig::per_origin`].
    per_origin: usize,
    /// Permits per origin, `per_origin` each.
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The runtime that started the engine, where database calls run if
    /// the store is bound to it ([`Store::bound_to_runtime`]).
    home: Option<Handle>,
}

impl Lane {
    fn origin_permits(&self, origin: &str) -> Arc<Semaphore> {
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = origins.get(origin) {
            return s.clone();
        }
        let s = Arc::new(Semaphore::new(self.per_origin));
        origins.insert(origin.to_owned(), s.clone());
        s
    }

    /// Runs a database call, on the home runtime if there is one, and
    /// waits for it. The call owns its arguments, so that it can run there.
    async fn db<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let call = call(self.store.clone());
        match &self.home {
            Some(home) => home.spawn(call).await.map_err(|_| StoreError::Closed)?,
            None => call.await,
        }
    }
}

/// Threads to run: as configured, but no more than there are permits, so
/// that the shares of the limits add up to exactly the limits.
fn thread_count(config: &EngineConfig) -> usize {
    config.threads.min(config.concurrency).min(config.per_origin).max(1)
}

/// `total` split into `parts` shares that add up to it, the larger first.
fn split(total: usize, parts: usize) -> Vec<usize> {
    (0..parts).map(|i| total / parts + usize::from(i < total % parts)).collect()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One delivery to attempt: the subscription and the attempts made before.
struct Job {
    sub: StoredSubscription,
    attempts_before: i64,
}

/// The result of one attempt, ready to be recorded.
enum Attempt {
    Delivered,
    Gone,
    Failed(String),
    Retry { reason: String, after: Option<Duration> },
}

impl Engine {
    /// A new engine with a client per thread; call [`run`](Self::run) to
    /// start it.
    pub fn new(
        store: Arc<dyn Store>,
        client: &ClientConfig,
        config: EngineConfig,
        policy: Arc<dyn EndpointCheck>,
        metrics: EngineMetrics,
    ) -> Result<Arc<Self>, ClientError> {
        let threads = thread_count(&config);
        let clients = (0..threads).map(|_| PushClient::new(client)).collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            store,
            clients,
            config,
            wake: Notify::new(),
            policy,
            signers: Mutex::default(),
            gates: Mutex::default(),
            mismatch_logged: Mutex::default(),
            metrics,
        }))
    }

    /// Tells the engine that a message was stored.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Works until `shutdown` turns true; work in hand stops at its next
    /// checkpoint, releasing its lease, and resumes on the next start.
    ///
    /// Starts one thread per client, each with a single-threaded runtime;
    /// database calls of a store bound to its runtime
    /// ([`Store::bound_to_runtime`]) come back to the runtime this is called on.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let home = self.store.bound_to_runtime().then(Handle::current);
        let threads = self.clients.len();
        let in_flight = split(self.config.concurrency.max(threads), threads);
        let per_origin = split(self.config.per_origin.max(threads), threads);
        let mut finished = Vec::with_capacity(threads);
        for (i, client) in self.clients.iter().enumerate() {
            let lane = Arc::new(Lane {
                store: self.store.clone(),
                client: client.clone(),
                in_flight: Arc::new(Semaphore::new(in_flight[i])),
                per_origin: per_origin[i],
                origins: Mutex::default(),
                home: home.clone(),
            });
            let (done_tx, done_rx) = oneshot::channel::<()>();
            let work = self.clone().run_lane(lane.clone(), shutdown.clone());
            let started = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|runtime| {
                std::thread::Builder::new().name(format!("tocsin-engine-{i}")).spawn(move || {
                    runtime.block_on(work);
                    let _ = done_tx.send(());
                })
            });
            match started {
                Ok(_) => finished.push(done_rx),
                Err(e) => {
                    // Not expected; the lane then shares the home runtime.
                    tracing::warn!(error = %e, "delivery engine: no thread of its own for a lane; using the main runtime");
                    let (done_tx, done_rx) = oneshot::channel::<()>();
                    let work = self.clone().run_lane(lane, shutdown.clone());
                    tokio::spawn(async move {
                        work.await;
                        let _ = done_tx.send(());
                    });
                    finished.push(done_rx);
                }
            }
        }
        for done in finished {
            let _ = done.await;
        }
    }

    /// One thread's workers, until `shutdown`.
    async fn run_lane(self: Arc<Self>, lane: Arc<Lane>, shutdown: watch::Receiver<bool>) {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.config.workers.max(1) {
            let engine = self.clone();
            let lane = lane.clone();
            let mut shutdown = shutdown.clone();
            workers.spawn(async move {
                loop {
                    if *shutdown.borrow() {
                        return;
                    }
                    match engine.step(&lane, &shutdown).await {
                        Ok(true) => {}
                        Ok(false) => engine.pause(&mut shutdown).await,
                        Err(e) => {
                            tracing::error!(error = %e, "delivery engine: storage error; retrying");
                            engine.pause(&mut shutdown).await;
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    async fn pause(&self, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(self.config.poll_interval) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// Does one piece of work; false when there was none.
    async fn step(&self, lane: &Lane, shutdown: &watch::Receiver<bool>) -> Result<bool, StoreError> {
        let now = now_ms();
        if let Some(m) = lane.db(move |s| async move { s.next_startable_message(now).await }).await? {
            let (id, target, shard_size) = (m.id.clone(), m.target.clone(), self.config.shard_size);
            let started = lane.db(move |s| async move { s.start_message(&id, &target, shard_size, now).await });
            if started.await? {
                tracing::info!(message = %m.id, node = %self.config.node_id, "message sending");
                self.wake.notify_waiters();
                self.finish_if_complete(lane, &m.id).await?;
            }
            return Ok(true);
        }
        let lease = self.config.lease.as_millis() as i64;
        let node = self.config.node_id.clone();
        if let Some(shard) = lane.db(move |s| async move { s.claim_shard(&node, now, lease).await }).await? {
            self.process_shard(lane, shard, shutdown).await?;
            return Ok(true);
        }
        let (node, limit) = (self.config.node_id.clone(), self.config.page_size);
        let items = lane.db(move |s| async move { s.claim_retries(&node, now, lease, limit).await }).await?;
        if !items.is_empty() {
            self.process_retries(lane, items).await?;
            return Ok(true);
        }
        for id in lane.db(|s| async move { s.sending_message_ids().await }).await? {
            self.finish_if_complete(lane, &id).await?;
        }
        Ok(false)
    }

    async fn finish_if_complete(&self, lane: &Lane, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        let finished = lane.db(move |s| async move {
            if s.try_finish_message(&id, now_ms()).await? {
                s.message(&id).await
            } else {
                Ok(None)
            }
        });
        if let Some(m) = finished.await? {
            let c = m.counts;
            tracing::info!(message = %m.id, targeted = c.targeted, delivered = c.delivered, failed = c.failed,
                gone = c.gone, expired = c.expired, "message done");
        }
        Ok(())
    }

    async fn process_shard(
        &self,
        lane: &Lane,
        shard: Shard,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let id = shard.message_id.clone();
        let Some(message) = lane.db(move |s| async move { s.message(&id).await }).await? else {
            return Ok(());
        };
        if message.state != MessageState::Sending {
            return Ok(());
        }
        let message = Arc::new(message);
        let shard = Arc::new(shard);
        let lease = self.config.lease.as_millis() as i64;
        let page_size = self.config.page_size;
        let mut cursor = shard.cursor;
        loop {
            let (m, end_at) = (message.clone(), shard.end_at);
            let page = lane
                .db(move |s| async move { s.page_subscriptions(&m.target, cursor, Some(end_at), page_size).await })
                .await?;
            let done = (page.len() as i64) < page_size;
            let last = page.last().map_or(shard.end_at, |s| s.id);
            let jobs = page.into_iter().map(|sub| Job { sub, attempts_before: 0 }).collect();
            let outcome = self.attempt_all(lane, &message, jobs).await?;
            cursor = if done { shard.end_at } else { last };
            let stopping = *shutdown.borrow();
            // Stopping releases the lease at once, so a restart resumes without waiting for it.
            let lease_ms = if stopping { -1 } else { lease };
            let (sh, node) = (shard.clone(), self.config.node_id.clone());
            let state = lane
                .db(move |s| async move {
                    let progress = ShardProgress { cursor, done, lease_ms };
                    s.checkpoint_shard(&sh, &node, &progress, &outcome, now_ms()).await
                })
                .await?;
            match state {
                None => {
                    tracing::warn!(message = %message.id, shard = shard.shard, "lease lost; another node has the shard");
                    return Ok(());
                }
                Some(MessageState::Cancelled) => {
                    tracing::info!(message = %message.id, "message cancelled while sending");
                    return Ok(());
                }
                Some(_) if done => return self.finish_if_complete(lane, &message.id).await,
                Some(_) if stopping => {
                    tracing::info!(message = %message.id, shard = shard.shard, cursor, "stopping at a checkpoint");
                    return Ok(());
                }
                Some(_) => {}
            }
        }
    }

    async fn process_retries(&self, lane: &Lane, items: Vec<RetryItem>) -> Result<(), StoreError> {
        let mut by_message: HashMap<String, Vec<RetryItem>> = HashMap::new();
        for item in items {
            by_message.entry(item.message_id.clone()).or_default().push(item);
        }
        for (message_id, items) in by_message {
            let items = Arc::new(items);
            let (id, its) = (message_id.clone(), items.clone());
            // The message and the subscriptions still there; a deleted one
            // (gone for another message, or by the API) counts as gone.
            let (message, jobs, vanished) = lane
                .db(move |s| async move {
                    let Some(message) = s.message(&id).await? else { return Ok((None, Vec::new(), Vec::new())) };
                    let (mut jobs, mut vanished) = (Vec::with_capacity(its.len()), Vec::new());
                    for item in its.iter() {
                        match s.subscription(item.subscription_id).await? {
                            Some(sub) => jobs.push(Job { sub, attempts_before: item.attempt }),
                            None => vanished.push(item.subscription_id),
                        }
                    }
                    Ok((Some(message), jobs, vanished))
                })
                .await?;
            let Some(message) = message else { continue };
            let mut outcome = self.attempt_all(lane, &message, jobs).await?;
            outcome.gone.extend(vanished);
            let id = message_id.clone();
            lane.db(move |s| async move { s.record_retries(&id, &items, &outcome, now_ms()).await }).await?;
            self.finish_if_complete(lane, &message_id).await?;
        }
        Ok(())
    }

    fn gate(&self, origin: &str) -> Arc<OriginGate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gate) = gates.get(origin) {
            return gate.clone();
        }
        let gate = Arc::new(OriginGate {
            not_before: Mutex::new(None),
            latency: self.metrics.latency.get_or_create(&vec![("origin".into(), origin.to_owned())]).clone(),
        });
        gates.insert(origin.to_owned(), gate.clone());
        gate
    }

    async fn signer(&self, lane: &Lane, key_id: i64) -> Result<Arc<VapidSigner>, StoreError> {
        if let Some(s) = self.signers.lock().ok().and_then(|m| m.get(&key_id).cloned()) {
            return Ok(s);
        }
        let row = lane
            .db(move |s| async move { s.vapid_key(key_id).await })
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("VAPID key {key_id} missing")))?;
        let key = VapidKey::from_base64url(Some(&row.public_key), &row.private_key)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let signer = Arc::new(VapidSigner::new(Arc::new(key), self.config.subject.clone()));
        if let Ok(mut m) = self.signers.lock() {
            m.insert(key_id, signer.clone());
        }
        Ok(signer)
    }

    /// Attempts every job once, concurrently, and sorts the results into a
    /// page outcome (retries scheduled with their due time).
    async fn attempt_all(&self, lane: &Lane, message: &Message, jobs: Vec<Job>) -> Result<PageOutcome, StoreError> {
        let now = now_ms();
        let deadline = message.created_at.max(message.send_at.unwrap_or(0)) + i64::from(message.ttl) * 1000;
        let options = Arc::new(PushOptions {
            ttl: Ttl(message.ttl),
            urgency: message.urgency.as_deref().and_then(|u| u.parse::<Urgency>().ok()),
            topic: message.topic.as_deref().and_then(|t| Topic::new(t).ok()),
            ..PushOptions::default()
        });
        let payload = message.payload.clone().map(Bytes::from);
        let mut outcome = PageOutcome::default();
        let mut tasks = tokio::task::JoinSet::new();
        for job in jobs {
            let sub = &job.sub;
            if sub.subscription.expiration_time().is_some_and(|t| (t as i64) <= now) {
                self.metrics.count("expired", "subscription-expired");
                outcome.expired.push(sub.id);
                continue;
            }
            if now > deadline {
                self.metrics.count("failed", "ttl-expired");
                outcome.fail("ttl-expired".into());
                continue;
            }
            if let Err(reason) = self.policy.check(sub.subscription.endpoint()) {
                tracing::warn!(subscription = sub.id, %reason, "endpoint refused by policy");
                self.metrics.count("failed", "endpoint-not-allowed");
                outcome.fail("endpoint-not-allowed".into());
                continue;
            }
            let signer = self.signer(lane, sub.vapid_key_id).await?;
            let gate = self.gate(sub.subscription.origin());
            let origin_permits = lane.origin_permits(sub.subscription.origin());
            let (client, options, payload, in_flight, in_flight_gauge) = (
                lane.client.clone(),
                options.clone(),
                payload.clone(),
                lane.in_flight.clone(),
                self.metrics.in_flight.clone(),
            );
            tasks.spawn(async move {
                let attempt = match gate.enter(origin_permits).await {
                    Err(wait) => Attempt::Retry { reason: "rate-limited".into(), after: Some(wait) },
                    Ok(_origin_permit) => {
                        let Ok(_permit) = in_flight.acquire_owned().await else {
                            return (job, Attempt::Retry { reason: "shutdown".into(), after: None }, None);
                        };
                        match request::build(
                            &job.sub.subscription,
                            payload.as_deref(),
                            &options,
                            Some(&signer),
                            SystemTime::now(),
                        ) {
                            Err(e) => Attempt::Failed(FailReason::Request(e.to_string()).label()),
                            Ok(req) => {
                                in_flight_gauge.inc();
                                let started = Instant::now();
                                let o = client.send(req).await;
                                in_flight_gauge.dec();
                                gate.latency.observe(started.elapsed().as_secs_f64());
                                match o {
                                    Outcome::Delivered { .. } => Attempt::Delivered,
                                    Outcome::Gone { .. } => Attempt::Gone,
                                    Outcome::Failed { reason } => {
                                        let mismatch = matches!(reason, FailReason::VapidKeyMismatch { .. });
                                        return (
                                            job,
                                            Attempt::Failed(reason.label()),
                                            mismatch.then(|| reason.to_string()),
                                        );
                                    }
                                    Outcome::Retry { reason, after } => {
                                        tracing::debug!(endpoint = %job.sub.subscription.endpoint(), %reason, "will retry");
                                        if let Some(after) = after {
                                            gate.slow_down(after);
                                        }
                                        Attempt::Retry { reason: reason.label(), after }
                                    }
                                }
                            }
                        }
                    }
                };
                (job, attempt, None)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((job, attempt, loud)) = joined else {
                outcome.fail("internal".into());
                continue;
            };
            if let Some(text) = loud {
                self.log_mismatch_once(job.sub.subscription.origin(), &text);
            }
            match attempt {
                Attempt::Delivered => {
                    self.metrics.delivered.inc();
                    outcome.delivered += 1;
                }
                Attempt::Gone => {
                    self.metrics.gone.inc();
                    outcome.gone.push(job.sub.id);
                }
                Attempt::Failed(reason) => {
                    tracing::debug!(subscription = job.sub.id, %reason, "delivery failed");
                    self.metrics.count("failed", &reason);
                    outcome.fail(reason);
                }
                Attempt::Retry { reason, after } => {
                    let attempts = job.attempts_before + 1;
                    let wait = after.unwrap_or_else(|| backoff(&self.config.retry, attempts as u32));
                    let due_at = now_ms() + wait.as_millis() as i64;
                    if attempts >= i64::from(self.config.retry.max_attempts) {
                        let label = format!("retries-exhausted-{reason}");
                        self.metrics.count("failed", &label);
                        outcome.fail(label);
                    } else if due_at > deadline {
                        self.metrics.count("failed", "ttl-expired");
                        outcome.fail("ttl-expired".into());
                    } else {
                        self.metrics.count("retry", &reason);
                        self.metrics.retries.inc();
                        outcome.retries.push(NewRetry {
                            subscription_id: job.sub.id,
                            attempt: attempts,
                            due_at,
                            reason,
                        });
                    }
                }
            }
        }
        Ok(outcome)
    }

    fn log_mismatch_once(&self, origin: &str, text: &str) {
        let first = self.mismatch_logged.lock().map(|mut s| s.insert(origin.to_owned())).unwrap_or(false);
        if first {
            tracing::error!(push_service = %origin, "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_limit_and_none_is_empty() {
        for total in 1..40 {
            for parts in 1..=total.min(8) {
                let shares = split(total, parts);
                assert_eq!(shares.len(), parts);
                assert_eq!(shares.iter().sum::<usize>(), total, "{total} in {parts}");
                assert!(shares.iter().all(|&s| s >= 1), "{total} in {parts}: {shares:?}");
                assert!(shares.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1), "{shares:?}");
            }
        }
    }

    #[test]
    fn no_more_threads_than_permits() -> Result<(), tocsin_protocol::VapidError> {
        let subject = VapidSubject::new("mailto:a@example.com")?;
        let config = |threads, concurrency, per_origin| EngineConfig {
            node_id: "n".into(),
            shard_size: 10,
            page_size: 10,
            lease: Duration::from_secs(1),
            threads,
            workers: 2,
            concurrency,
            per_origin,
            retry: BroadcastConfig::default(),
            poll_interval: Duration::from_millis(10),
            subject: subject.clone(),
        };
        assert_eq!(thread_count(&config(2, 100, 100)), 2);
        assert_eq!(thread_count(&config(4, 1, 100)), 1, "one request in flight: one thread");
        assert_eq!(thread_count(&config(4, 100, 3)), 3, "three per origin: three threads");
        assert_eq!(thread_count(&config(0, 100, 100)), 1);
        Ok(())
    }
}
