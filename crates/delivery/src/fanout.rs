//! One message to many subscriptions: the bare sender.
//!
//! No database and no server: subscriptions come from an iterator, outcomes
//! go to counters. A fixed set of worker tasks, spread over one thread per
//! core, bounds the requests in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tocsin_protocol::request::{self, PushOptions};
use tocsin_protocol::{FailReason, Outcome, Subscription, VapidSigner};

use crate::client::{ClientConfig, ClientError, PushClient};

/// How a broadcast behaves.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// Requests in flight at once, over all push services.
    pub concurrency: usize,
    /// Attempts per recipient, the first included.
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles it, with jitter.
    pub retry_base: Duration,
    /// The longest wait before a retry; a `Retry-After` beyond it gives up.
    pub max_retry_wait: Duration,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            concurrency: 100,
            max_attempts: 3,
            retry_base: Duration::from_secs(1),
            max_retry_wait: Duration::from_secs(60),
        }
    }
}

/// Live counters, readable while a broadcast runs (for a progress bar).
#[derive(Debug, Default)]
pub struct Progress {
    /// Recipients finished, whatever their outcome.
    pub done: AtomicU64,
    /// Of those, accepted by their push service (201).
    pub delivered: AtomicU64,
    /// Subscription gone (404/410).
    pub gone: AtomicU64,
    /// Skipped because the subscription's `expirationTime` has passed.
    pub expired: AtomicU64,
    /// Failed for good.
    pub failed: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    failures: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Progress {
    fn record(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Delivered { .. } => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Gone { .. } => {
                self.gone.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed { reason } => self.fail(reason),
            // deliver_one never returns Retry: the last one becomes Failed.
            Outcome::Retry { .. } => {}
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn fail(&self, reason: &FailReason) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock() {
            f.entry(reason.label()).or_insert_with(|| (0, reason.to_string())).0 += 1;
        }
    }

    fn fail_invalid(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock() {
            f.entry("invalid-subscription".into()).or_insert_with(|| (0, message)).0 += 1;
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A failure reason in a [`Summary`]: how many, and one example message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    /// How many recipients failed this way.
    pub count: u64,
    /// The first such failure, in words.
    pub example: String,
}

/// The result of a broadcast.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Recipients read.
    pub total: u64,
    /// Accepted by their push service (201).
    pub delivered: u64,
    /// Subscription gone (404/410).
    pub gone: u64,
    /// Skipped: `expirationTime` passed.
    pub expired: u64,
    /// Failed for good, all reasons.
    pub failed: u64,
    /// Failures by reason label.
    pub failed_by_reason: BTreeMap<String, FailureCount>,
    /// Retries made.
    pub retries: u64,
    /// Wall time.
    pub elapsed_seconds: f64,
    /// Recipients finished per second.
    pub messages_per_second: f64,
}

fn jitter(d: Duration) -> Duration {
    // Full jitter in [d/2, d]: spreads retries without a random-number crate.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |t| t.subsec_nanos()) as u64;
    let half = d / 2;
    half + Duration::from_nanos(nanos % (half.as_nanos() as u64 + 1))
}

/// The wait before retry number `attempt` (1 for the first retry).
pub fn backoff(config: &BroadcastConfig, attempt: u32) -> Duration {
    let exp = config.retry_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    jitter(exp.min(config.max_retry_wait))
}

fn expired(sub: &Subscription) -> bool {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    sub.expiration_time().is_some_and(|t| t <= now_ms)
}

/// Sends to one subscription, retrying as the outcome says, and returns the
/// final outcome (never [`Outcome::Retry`]) and the number of retries made.
pub async fn deliver_one(
    client: &PushClient,
    sub: &Subscription,
    payload: Option<&[u8]>,
    options: &PushOptions,
    signer: Option<&VapidSigner>,
    config: &BroadcastConfig,
) -> (Outcome, u32) {
    let mut retries = 0;
    loop {
        let req = match request::build(sub, payload, options, signer, SystemTime::now()) {
            Ok(r) => r,
            Err(e) => return (Outcome::Failed { reason: FailReason::Request(e.to_string()) }, retries),
        };
        let outcome = client.send(req).await;
        let Outcome::Retry { reason, after } = outcome else { return (outcome, retries) };
        if retries + 1 >= config.max_attempts {
            return (Outcome::Failed { reason: FailReason::RetriesExhausted(reason) }, retries);
        }
        retries += 1;
        let wait = match after {
            Some(after) if after > config.max_retry_wait => {
                return (Outcome::Failed { reason: FailReason::RetriesExhausted(reason) }, retries - 1);
            }
            Some(after) => after,
            None => backoff(config, retries),
        };
        tracing::debug!(endpoint = %sub.endpoint(), %reason, ?wait, "retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Sends one message to every subscription the iterator yields. An `Err`
/// item (a line that did not parse) counts as failed `invalid-subscription`.
///
/// Thread per core: `threads` OS threads, each with a single-threaded
/// runtime, its own [`PushClient`] (so its own connections) and its share of
/// `concurrency` worker tasks, which pull the next recipient from the shared
/// iterator when their previous one is done. A request, its connection's
/// HTTP/2 task and the encryption all stay on one thread: no wake-ups across
/// threads and no task, permit or `Arc` clones per recipient. (The first
/// version spawned a task per recipient onto the shared multi-threaded
/// runtime; its profile showed the kernel's thread switching at 11 % of the
/// CPU.)
#[allow(clippy::too_many_arguments)]
pub async fn broadcast<I>(
    client_config: &ClientConfig,
    threads: usize,
    subscriptions: I,
    payload: Option<Bytes>,
    options: Arc<PushOptions>,
    signer: Option<Arc<VapidSigner>>,
    config: BroadcastConfig,
    progress: Arc<Progress>,
) -> Result<Summary, ClientError>
where
    I: IntoIterator<Item = Result<Subscription, String>>,
    I::IntoIter: Send + 'static,
{
    let start = Instant::now();
    let threads = threads.clamp(1, config.concurrency.max(1));
    let clients = (0..threads).map(|_| PushClient::new(client_config)).collect::<Result<Vec<_>, _>>()?;
    let source = Arc::new(Mutex::new((subscriptions.into_iter(), 0u64)));
    let config = Arc::new(config);
    let mut handles = Vec::with_capacity(threads);
    for (t, client) in clients.into_iter().enumerate() {
        // Spread the workers evenly: the first threads take the remainder.
        let workers = config.concurrency.max(1) / threads + usize::from(t < config.concurrency.max(1) % threads);
        let (payload, options, signer, config, progress, source) =
            (payload.clone(), options.clone(), signer.clone(), config.clone(), progress.clone(), source.clone());
        // Built here, not in the thread, so that a failure is an error rather
        // than a thread that silently does nothing.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Build(format!("cannot start a sending runtime: {e}")))?;
        let spawned = std::thread::Builder::new().name(format!("tocsin-send-{t}")).spawn(move || {
            runtime.block_on(async move {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..workers {
                    set.spawn(worker(
                        client.clone(),
                        source.clone(),
                        payload.clone(),
                        options.clone(),
                        signer.clone(),
                        config.clone(),
                        progress.clone(),
                    ));
                }
                while set.join_next().await.is_some() {}
            });
        });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => return Err(ClientError::Build(format!("cannot start a sending thread: {e}"))),
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        for handle in handles {
            let _ = handle.join();
        }
    })
    .await;
    let total = source.lock().map_or(0, |g| g.1);
    let elapsed = start.elapsed().as_secs_f64();
    let failed_by_reason = progress
        .failures
        .lock()
        .map(|f| {
            f.iter()
                .map(|(k, (count, example))| (k.clone(), FailureCount { count: *count, example: example.clone() }))
                .collect()
        })
        .unwrap_or_default();
    let done = progress.done.load(Ordering::Relaxed);
    Ok(Summary {
        total,
        delivered: progress.delivered.load(Ordering::Relaxed),
        gone: progress.gone.load(Ordering::Relaxed),
        expired: progress.expired.load(Ordering::Relaxed),
        failed: progress.failed.load(Ordering::Relaxed),
        failed_by_reason,
        retries: progress.retries.load(Ordering::Relaxed),
        elapsed_seconds: elapsed,
        messages_per_second: if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 },
    })
}

type Source<I> = Arc<Mutex<(I, u64)>>;

/// One worker: takes the next recipient, sends, records; until the source is dry.
async fn worker<I>(
    client: PushClient,
    source: Source<I>,
    payload: Option<Bytes>,
    options: Arc<PushOptions>,
    signer: Option<Arc<VapidSigner>>,
    config: Arc<BroadcastConfig>,
    progress: Arc<Progress>,
) where
    I: Iterator<Item = Result<Subscription, String>>,
{
    loop {
        let next = {
            let Ok(mut guard) = source.lock() else { return };
            let (items, total) = &mut *guard;
            let item = items.next();
            *total += u64::from(item.is_some());
            item
        };
        let sub = match next {
            None => return,
            Some(Err(message)) => {
                progress.fail_invalid(message);
                continue;
            }
            Some(Ok(sub)) => sub,
        };
        if expired(&sub) {
            progress.expired.fetch_add(1, Ordering::Relaxed);
            progress.done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (outcome, retries) =
            deliver_one(&client, &sub, payload.as_deref(), &options, signer.as_deref(), &config).await;
        progress.retries.fetch_add(retries as u64, Ordering::Relaxed);
        progress.record(&outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let c = BroadcastConfig {
            retry_base: Duration::from_secs(1),
            max_retry_wait: Duration::from_secs(10),
            ..Default::default()
        };
        for attempt in 1..=6 {
            let want = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(10));
            let got = backoff(&c, attempt);
            assert!(got >= want / 2 && got <= want, "{attempt}: {got:?}");
        }
        assert!(backoff(&c, 40) <= Duration::from_secs(10));
    }
}
