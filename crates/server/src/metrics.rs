//! `/metrics` in the Prometheus text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tocsin_store::Stats;

/// The server's own counters and the engine's; stored totals are read at
/// scrape time.
#[derive(Debug)]
pub struct Metrics {
    /// Subscriptions saved through the API.
    pub subscriptions_saved: Counter,
    /// Messages accepted through the API.
    pub messages_accepted: Counter,
    engine: tocsin_delivery::engine::EngineMetrics,
    node: String,
}

impl Metrics {
    /// Fresh counters beside the engine's.
    pub fn new(engine: tocsin_delivery::engine::EngineMetrics, node: String) -> Self {
        Self { subscriptions_saved: Counter::default(), messages_accepted: Counter::default(), engine, node }
    }

    /// The text exposition, with `stats` as gauges.
    pub fn render(&self, stats: &Stats) -> String {
        let mut registry = Registry::with_prefix("tocsin");
        registry.register(
            "subscriptions_saved",
            "Subscriptions saved through the API",
            self.subscriptions_saved.clone(),
        );
        registry.register("messages_accepted", "Messages accepted through the API", self.messages_accepted.clone());
        let gauge = |v: i64| {
            let g: Gauge = Gauge::default();
            g.set(v);
            g
        };
        registry.register("subscriptions", "Subscriptions stored", gauge(stats.subscriptions));
        registry.register("messages_pending", "Messages not yet done", gauge(stats.messages_pending));
        registry.register(
            "deliveries_delivered",
            "Deliveries accepted by push services, all messages",
            gauge(stats.delivered),
        );
        registry.register("deliveries_failed", "Deliveries failed for good, all messages", gauge(stats.failed));
        registry.register("subscriptions_removed", "Subscriptions removed as gone or expired", gauge(stats.removed));
        self.engine.register(&mut registry, &self.node);
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
