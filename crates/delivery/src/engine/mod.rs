//! The delivery engine behind `tocsin serve`.
//!
//! A message's audience is split into shards (ranges of subscription ids)
//! when it starts. A worker claims a shard under a lease and a token new for
//! that claim, walks it page by page, and records each page (outcomes,
//! cursor, renewed lease) in one short transaction, never while a request to
//! a push service is open. While a page is in flight a heartbeat renews the
//! lease every third of it; a worker whose claim is lost (its lease ran out
//! and another worker claimed the shard) stops sending the rest of the page
//! and records nothing, and the store refuses any write under a token that
//! is no longer the shard's. So each page is counted once, and a crash
//! re-sends at most the pages that were in flight. Deliveries that must be
//! retried (429, 406, 5xx, timeouts, network errors) become rows with a due
//! time, claimed the same way. A message is `done` when its shards are
//! closed and no retry waits.
//!
//! On PostgreSQL several processes share this work with nothing between them
//! but the database (`FOR UPDATE SKIP LOCKED`); on SQLite one process owns it.
//!
//! Inside a process the engine runs thread per core: each thread has a
//! single-threaded runtime, its own transport (so its own connections), its
//! share of the in-flight and per-origin limits, and its own workers. A
//! delivery's encryption, its request and its connection's HTTP/2 task all
//! stay on one thread, with no wake-up across threads per delivery. On
//! PostgreSQL, database calls go back to the runtime that started the engine
//! (a few per page), so every connection's socket stays on one runtime.
//!
//! Rooms: [`lane`] (a thread's limits, the shared per-origin gates),
//! `work` (the loop, claims and heartbeats), `attempt` (one attempt per
//! job), `retry` (the retry policy, a pure function), [`metrics`],
//! [`origins`] (each push service origin's answers).

mod ab;
mod attempt;
mod lane;
pub mod metrics;
pub mod origins;
mod retry;
mod work;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tocsin_protocol::{VapidSigner, VapidSubject};
use tocsin_store_api::{Claim, Store};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify, Semaphore};

use crate::client::{ClientConfig, ClientError, Transport};
use crate::fanout::BroadcastConfig;
use crate::PushClient;
use lane::{split, thread_count, Lane, OriginGate};
pub use metrics::{EngineMetrics, MAX_ORIGIN_LABELS};
pub use origins::PushServiceHealth;

/// How the engine works.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This process's name in leases and metrics.
    pub node_id: String,
    /// Subscriptions per shard (the unit of work nodes claim).
    pub shard_size: i64,
    /// Subscriptions read and checkpointed at a time.
    pub page_size: i64,
    /// How long a claim lasts without a checkpoint or a heartbeat; a dead
    /// node's work is taken over after this.
    pub lease: Duration,
    /// Threads sending (one per core is right); fewer when `concurrency` or
    /// `per_origin` is smaller, so that each thread has at least one permit.
    pub threads: usize,
    /// Each lane on an OS thread of its own with a runtime of its own
    /// (`true`, for production); `false` runs every lane as tasks on the
    /// caller's runtime, so that tests can pause its clock.
    pub own_threads: bool,
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
    /// Where leases, due times and TTL deadlines take the time from.
    pub clock: Clock,
}

/// The engine's time, in ms since the epoch, for leases, due times and TTLs.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock (several nodes compare leases through it).
    System,
    /// The wall clock when made, advanced by tokio's clock: under
    /// `tokio::time::pause` it moves only as the test advances it.
    Tokio {
        /// Wall time when made, ms since the epoch.
        base_ms: i64,
        /// tokio's time when made.
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's (for tests with a paused clock).
    pub fn tokio() -> Self {
        Self::Tokio { base_ms: system_ms(), start: tokio::time::Instant::now() }
    }

    /// A clock that follows tokio's from `base_ms` (ms since the epoch), for
    /// tests that need a date: a local time, quiet hours.
    pub fn tokio_at(base_ms: i64) -> Self {
        Self::Tokio { base_ms, start: tokio::time::Instant::now() }
    }

    /// Now, in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System => system_ms(),
            Self::Tokio { base_ms, start } => base_ms + start.elapsed().as_millis() as i64,
        }
    }
}

fn system_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What the engine needs to decide whether an endpoint may be sent to.
pub trait EndpointCheck: Send + Sync + 'static {
    /// `Err(reason)` when the endpoint must not be contacted.
    fn check(&self, endpoint: &url::Url) -> Result<(), String>;
}

/// An origin's state is dropped after this long unused.
pub const ORIGIN_IDLE_MS: i64 = 3_600_000;

/// Runs messages through to `done`.
pub struct Engine {
    store: Arc<dyn Store>,
    /// One transport per thread.
    transports: Vec<Arc<dyn Transport>>,
    config: EngineConfig,
    wake: Arc<Notify>,
    policy: Arc<dyn EndpointCheck>,
    signers: Mutex<HashMap<i64, Arc<VapidSigner>>>,
    gates: Mutex<HashMap<String, Arc<OriginGate>>>,
    mismatch_logged: Mutex<HashSet<String>>,
    metrics: EngineMetrics,
    /// Random per engine: with `claims`, makes every claim's token unique
    /// even between processes that share a `--node-id`.
    claim_prefix: u64,
    claims: AtomicU64,
    /// Workers holding results the database has not taken yet, or whose
    /// heartbeats cannot reach it (it is away); while any does, no new work
    /// is claimed, so this node never takes over its own claims.
    recording: std::sync::atomic::AtomicUsize,
}

impl Engine {
    /// A new engine with an HTTP client per thread; call [`run`](Self::run)
    /// to start it.
    pub fn new(
        store: Arc<dyn Store>,
        client: &ClientConfig,
        config: EngineConfig,
        policy: Arc<dyn EndpointCheck>,
        metrics: EngineMetrics,
    ) -> Result<Arc<Self>, ClientError> {
        let threads = thread_count(config.threads, config.concurrency, config.per_origin);
        let transports = (0..threads)
            .map(|_| PushClient::new(client).map(|c| Arc::new(c) as Arc<dyn Transport>))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::with_transports(store, transports, config, policy, metrics))
    }

    /// A new engine sending through the given transports, one lane each
    /// (tests give it scripted push services).
    pub fn with_transports(
        store: Arc<dyn Store>,
        transports: Vec<Arc<dyn Transport>>,
        config: EngineConfig,
        policy: Arc<dyn EndpointCheck>,
        metrics: EngineMetrics,
    ) -> Arc<Self> {
        let claim_prefix = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Arc::new(Self {
            store,
            transports,
            config,
            wake: Arc::new(Notify::new()),
            policy,
            signers: Mutex::default(),
            gates: Mutex::default(),
            mismatch_logged: Mutex::default(),
            metrics,
            claim_prefix,
            claims: AtomicU64::new(0),
            recording: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Tells the engine that a message was stored.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    fn now_ms(&self) -> i64 {
        self.config.clock.now_ms()
    }

    fn lease_ms(&self) -> i64 {
        self.config.lease.as_millis() as i64
    }

    /// A claim with a token no other claim has.
    fn new_claim(&self) -> Claim {
        let n = self.claims.fetch_add(1, Ordering::Relaxed);
        Claim {
            node: self.config.node_id.clone(),
            token: format!("{}/{:016x}-{n}", self.config.node_id, self.claim_prefix),
        }
    }

    /// Each push service origin this process has sent to, by origin: its
    /// requests, outcomes, latency and back-off (`GET /v1/push-services`).
    pub fn push_services(&self) -> Vec<PushServiceHealth> {
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<PushServiceHealth> =
            gates.iter().map(|(origin, gate)| gate.stats.snapshot(origin, gate.backoff())).collect();
        all.sort_by(|a, b| a.origin.cmp(&b.origin));
        all
    }

    fn gate(&self, origin: &str) -> Arc<OriginGate> {
        let now = self.now_ms();
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gate) = gates.get(origin) {
            gate.used_at(now);
            return gate.clone();
        }
        self.evict_idle_origins(&mut gates, now);
        let gate = Arc::new(OriginGate::new(self.metrics.latency_of(origin), now));
        gates.insert(origin.to_owned(), gate.clone());
        gate
    }

    /// Drops the state of origins unused for [`ORIGIN_IDLE_MS`] (their
    /// gate, statistics and latency series) when a new origin comes:
    /// endpoints at ever new hosts must not grow the engine's memory or
    /// `/metrics` for good. A gate in use (held by a request) stays.
    fn evict_idle_origins(&self, gates: &mut HashMap<String, Arc<OriginGate>>, now: i64) {
        let idle: Vec<String> = gates
            .iter()
            .filter(|(_, g)| now.saturating_sub(g.last_used()) >= ORIGIN_IDLE_MS && Arc::strong_count(g) == 1)
            .map(|(o, _)| o.clone())
            .collect();
        for origin in idle {
            gates.remove(&origin);
            self.metrics.forget_origin(&origin);
            if let Ok(mut logged) = self.mismatch_logged.lock() {
                logged.remove(&origin);
            }
        }
    }

    /// How many origins the engine keeps state for (tests).
    pub fn origins_tracked(&self) -> usize {
        self.gates.lock().map_or(0, |g| g.len())
    }

    /// Works until `shutdown` turns true; work in hand stops at its next
    /// checkpoint, releasing its lease, and resumes on the next start.
    ///
    /// Starts one thread per transport, each with a single-threaded runtime
    /// (unless [`EngineConfig::own_threads`] is false); database calls of a
    /// store bound to its runtime ([`Store::bound_to_runtime`]) come back to
    /// the runtime this is called on.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let home = (self.store.bound_to_runtime() && self.config.own_threads).then(Handle::current);
        let threads = self.transports.len();
        let in_flight = split(self.config.concurrency.max(threads), threads);
        let per_origin = split(self.config.per_origin.max(threads), threads);
        let mut finished = Vec::with_capacity(threads);
        for (i, transport) in self.transports.iter().enumerate() {
            let lane = Arc::new(Lane {
                store: self.store.clone(),
                transport: transport.clone(),
                in_flight: Arc::new(Semaphore::new(in_flight[i])),
                per_origin: per_origin[i],
                origins: Mutex::default(),
                home: home.clone(),
            });
            let (done_tx, done_rx) = oneshot::channel::<()>();
            finished.push(done_rx);
            let work = self.clone().run_lane(lane.clone(), shutdown.clone());
            let started = if self.config.own_threads {
                tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|runtime| {
                    std::thread::Builder::new().name(format!("tocsin-engine-{i}")).spawn(move || {
                        runtime.block_on(work);
                        let _ = done_tx.send(());
                    })
                })
            } else {
                tokio::spawn(async move {
                    work.await;
                    let _ = done_tx.send(());
                });
                continue;
            };
            if let Err(e) = started {
                // Not expected; the lane then shares the home runtime.
                tracing::warn!(error = %e, "delivery engine: no thread of its own for a lane; using the main runtime");
                let (done_tx, done_rx) = oneshot::channel::<()>();
                if let Some(last) = finished.last_mut() {
                    *last = done_rx;
                }
                let work = self.clone().run_lane(lane, shutdown.clone());
                tokio::spawn(async move {
                    work.await;
                    let _ = done_tx.send(());
                });
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
}
