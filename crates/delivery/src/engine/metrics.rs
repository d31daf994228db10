//! The counters and histograms the engine keeps, for `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
    /// Latency of push requests by origin: the first [`MAX_ORIGIN_LABELS`]
    /// origins in use have a series each, the rest share `other`.
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// The origins that have a latency series of their own.
    labeled: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Claims lost while their work was in flight (another worker took the
    /// shard or the retries after the lease ran out).
    pub claims_lost: Counter,
    /// The two series counted on every delivery, looked up once (a lookup
    /// builds and hashes the label strings).
    pub(super) delivered: Counter,
    pub(super) gone: Counter,
}

/// Origins with a latency series of their own; beyond them `origin="other"`,
/// so that endpoints at ever new hosts cannot grow `/metrics` without bound.
pub const MAX_ORIGIN_LABELS: usize = 50;

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
            labeled: Default::default(),
            retries: Counter::default(),
            in_flight: Gauge::default(),
            latency: Family::new_with_constructor(latency_histogram),
            claims_lost: Counter::default(),
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
        registry.register(
            "claims_lost",
            "Shards or retries whose claim was lost while in flight (their work was left to the new owner)",
            self.claims_lost.clone(),
        );
    }

    pub(super) fn count(&self, outcome: &str, reason: &str) {
        self.deliveries
            .get_or_create(&vec![("outcome".into(), outcome.into()), ("reason".into(), reason.into())])
            .inc();
    }

    /// The latency series of one origin: its own while fewer than
    /// [`MAX_ORIGIN_LABELS`] origins have one, else `other`.
    pub(super) fn latency_of(&self, origin: &str) -> Histogram {
        let mut labeled = self.labeled.lock().unwrap_or_else(|p| p.into_inner());
        let label = if labeled.contains(origin) || labeled.len() < MAX_ORIGIN_LABELS {
            labeled.insert(origin.to_owned());
            origin
        } else {
            "other"
        };
        self.latency.get_or_create(&vec![("origin".into(), label.to_owned())]).clone()
    }

    /// Forgets an origin's own series (its state was evicted), making room
    /// for another.
    pub(super) fn forget_origin(&self, origin: &str) {
        let mut labeled = self.labeled.lock().unwrap_or_else(|p| p.into_inner());
        if labeled.remove(origin) {
            self.latency.remove(&vec![("origin".into(), origin.to_owned())]);
        }
    }
}
