//! A lane: one sending thread's own things (its transport, its share of the
//! in-flight and per-origin limits), and the per-origin gate that every
//! thread shares (`Retry-After` slows an origin for all of them).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use tocsin_store_api::{Store, StoreError};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::client::Transport;

/// One sending thread's own things.
pub(super) struct Lane {
    pub(super) store: Arc<dyn Store>,
    pub(super) transport: Arc<dyn Transport>,
    /// This thread's share of [`super::EngineConfig::concurrency`].
    pub(super) in_flight: Arc<Semaphore>,
    /// This thread's share of [`super::EngineConfig::per_origin`].
    pub(super) per_origin: usize,
    /// Permits per origin, `per_origin` each.
    pub(super) origins: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The runtime that started the engine, where database calls run if
    /// the store is bound to it ([`Store::bound_to_runtime`]).
    pub(super) home: Option<Handle>,
}

impl Lane {
    pub(super) fn origin_permits(&self, origin: &str) -> Arc<Semaphore> {
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = origins.get(origin) {
            return s.clone();
        }
        // Permits nobody holds are no state worth keeping: drop them before
        // the map grows (a later request makes them again, all free).
        if origins.len() >= 64 {
            origins.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let s = Arc::new(Semaphore::new(self.per_origin));
        origins.insert(origin.to_owned(), s.clone());
        s
    }

    /// Runs a database call, on the home runtime if there is one, and
    /// waits for it. The call owns its arguments, so that it can run there.
    pub(super) async fn db<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
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

/// Slows the requests to one push service after it asked to (`Retry-After`),
/// for every thread. The bound on requests in flight is per thread: [`Lane`].
/// Times are tokio's, so that tests can run it under a paused clock.
pub(super) struct OriginGate {
    not_before: Mutex<Option<Instant>>,
    /// When it was last asked for, ms since the epoch (the engine's clock).
    last_used: std::sync::atomic::AtomicI64,
    /// This origin's series of `push_latency_seconds`, looked up once.
    pub(super) latency: Histogram,
    /// What it answered, for `GET /v1/push-services`.
    pub(super) stats: super::origins::OriginStats,
}

/// A gate wait longer than this is not waited for: the delivery is
/// rescheduled instead, so a worker is not held for a long `Retry-After`.
const MAX_GATE_WAIT: Duration = Duration::from_secs(2);

impl OriginGate {
    pub(super) fn new(latency: Histogram, now_ms: i64) -> Self {
        Self {
            not_before: Mutex::new(None),
            last_used: std::sync::atomic::AtomicI64::new(now_ms),
            latency,
            stats: Default::default(),
        }
    }

    pub(super) fn used_at(&self, now_ms: i64) {
        self.last_used.store(now_ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn last_used(&self) -> i64 {
        self.last_used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes a permit of `permits` (this thread's share for the origin), then
    /// waits out a short `Retry-After`; a long one is returned instead.
    pub(super) async fn enter(&self, permits: Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Duration> {
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

    /// How long this origin is still held back by a `Retry-After`.
    pub(super) fn backoff(&self) -> Duration {
        self.not_before
            .lock()
            .ok()
            .and_then(|nb| *nb)
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }

    pub(super) fn slow_down(&self, after: Duration) {
        if let Ok(mut nb) = self.not_before.lock() {
            // `after` comes from a push service: saturate, never overflow.
            let now = Instant::now();
            let until = now.checked_add(after).unwrap_or(now + tocsin_protocol::outcome::MAX_RETRY_AFTER);
            if nb.is_none_or(|t| t < until) {
                *nb = Some(until);
            }
        }
    }
}

/// Threads to run: as configured, but no more than there are permits, so
/// that the shares of the limits add up to exactly the limits.
pub(super) fn thread_count(threads: usize, concurrency: usize, per_origin: usize) -> usize {
    threads.min(concurrency).min(per_origin).max(1)
}

/// `total` split into `parts` shares that add up to it, the larger first.
pub(super) fn split(total: usize, parts: usize) -> Vec<usize> {
    (0..parts).map(|i| total / parts + usize::from(i < total % parts)).collect()
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
    fn no_more_threads_than_permits() {
        assert_eq!(thread_count(2, 100, 100), 2);
        assert_eq!(thread_count(4, 1, 100), 1, "one request in flight: one thread");
        assert_eq!(thread_count(4, 100, 3), 3, "three per origin: three threads");
        assert_eq!(thread_count(0, 100, 100), 1);
    }
}
